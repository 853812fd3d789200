//! `[rate_limits] backend = "redis"`: limits counted in a real Redis (`RUNBASE_TEST_REDIS_URL`,
//! default redis://127.0.0.1:6379; `.ci/run` starts one) are exact across server processes, and
//! with Redis unreachable the configured fail mode holds. Skipped without Redis, except under
//! CI where it fails. Each test uses its own random key prefix; nothing is flushed.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::redis::{random_prefix, redis_up, redis_url};
use common::{Resp, Server};

fn redis_env<'a>(url: &'a str, prefix: &'a str, fail: &'a str) -> Vec<(&'static str, &'a str)> {
    vec![
        ("RUNBASE_RATE_LIMITS__BACKEND", "redis"),
        ("RUNBASE_REDIS_URL", url),
        ("RUNBASE_RATE_LIMITS__REDIS_KEY_PREFIX", prefix),
        ("RUNBASE_RATE_LIMITS__FAIL", fail),
        // The bursts below come from one address.
        ("RUNBASE_HTTP__MAX_CONNECTIONS", "4096"),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "4096"),
    ]
}

/// A URL nothing listens on.
fn closed_redis_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("redis://{}", l.local_addr().unwrap())
}

async fn session_check(base: &str) -> Resp {
    let c = common::Client {
        http: reqwest::Client::new(),
        base: base.to_owned(),
    };
    let req = c
        .http
        .get(format!("{base}/auth/session"))
        .header("accept", "application/json");
    c.send(req).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_runs_limit_is_twenty_per_ten_seconds_in_redis() {
    if !redis_up() {
        return;
    }
    let (url, prefix) = (redis_url(), random_prefix());
    let server = Server::start_with(&redis_env(&url, &prefix, "closed"));
    let key = server.account("a@example.com", 0);
    let c = server.client();
    let mut tasks = Vec::new();
    for _ in 0..30 {
        let (c, key) = (c.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            c.run(&key, "run_does_not_exist").await
        }));
    }
    let mut counted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.header("ratelimit-limit"), Some("20"));
        if r.status == 429 {
            r.assert_error(429, "RATE_LIMITED");
            assert_eq!(r.header("ratelimit-remaining"), Some("0"));
            assert!(r.header("retry-after").is_some());
        } else {
            r.assert_error(404, "run_not_found");
            counted += 1;
        }
    }
    assert_eq!(counted, 20);
    // The account endpoint reads the same count without adding to it.
    let acct = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(acct.status, 200, "{}", acct.body);
    assert_eq!(acct.body["key"]["rateLimit"]["remaining"], 0);
}

/// Two server processes on one Redis count one client together: the per-IP session-check
/// limit (both see 127.0.0.1) admits exactly 20 of 40 requests spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_limit_is_exact_across_two_server_processes() {
    if !redis_up() {
        return;
    }
    let (url, prefix) = (redis_url(), random_prefix());
    let mut env = redis_env(&url, &prefix, "closed");
    env.push(("RUNBASE_RATE_LIMITS__SESSION__REQUESTS", "20"));
    env.push(("RUNBASE_RATE_LIMITS__SESSION__WINDOW_SECS", "10"));
    let a = Server::start_with(&env);
    let b = Server::start_with(&env);
    let mut tasks = Vec::new();
    for i in 0..40 {
        let base = if i % 2 == 0 {
            a.url.clone()
        } else {
            b.url.clone()
        };
        tasks.push(tokio::spawn(async move { session_check(&base).await }));
    }
    let mut admitted = 0;
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            401 => admitted += 1,
            _ => r.assert_error(429, "RATE_LIMITED"),
        }
    }
    assert_eq!(admitted, 20);
}

#[tokio::test]
async fn unreachable_redis_fails_closed_with_503_by_default() {
    let url = closed_redis_url();
    let prefix = random_prefix();
    let mut env = redis_env(&url, &prefix, "closed");
    env.retain(|(k, _)| *k != "RUNBASE_RATE_LIMITS__FAIL");
    let server = Server::start_with(&env);
    let key = server.account("a@example.com", 0);
    let c = server.client();
    let n = 30;
    for _ in 0..n {
        c.run(&key, "run_does_not_exist")
            .await
            .assert_error(503, "service_unavailable");
    }
    session_check(&server.url)
        .await
        .assert_error(503, "service_unavailable");
    // Endpoints without a limit keep working.
    assert_eq!(c.get(Some(&key), "/api/v1/account").await.status, 200);
    // Logged, but not once per request.
    let lines = server.log().matches("Redis is unavailable").count();
    assert!(
        lines >= 1 && lines < n,
        "{lines} log lines:\n{}",
        server.log()
    );
}

#[tokio::test]
async fn unreachable_redis_fails_open_when_configured() {
    let url = closed_redis_url();
    let prefix = random_prefix();
    let mut env = redis_env(&url, &prefix, "open");
    env.push(("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "2"));
    let server = Server::start_with(&env);
    let key = server.account("a@example.com", 0);
    let c = server.client();
    // Far past the limit of 2: nothing is counted, everything gets through.
    for _ in 0..10 {
        c.run(&key, "run_does_not_exist")
            .await
            .assert_error(404, "run_not_found");
    }
    assert_eq!(session_check(&server.url).await.status, 401);
    assert!(server.log().contains("Redis is unavailable"));
}

#[test]
fn the_redis_backend_needs_a_url_and_known_settings() {
    let dir = tempfile::tempdir().unwrap();
    for (env, message) in [
        (
            vec![("RUNBASE_RATE_LIMITS__BACKEND", "redis")],
            "needs redis_url",
        ),
        (
            vec![("RUNBASE_RATE_LIMITS__BACKEND", "memcached")],
            "rate_limits.backend",
        ),
        (
            vec![("RUNBASE_RATE_LIMITS__FAIL", "sometimes")],
            "rate_limits.fail",
        ),
        (
            vec![
                ("RUNBASE_RATE_LIMITS__BACKEND", "redis"),
                ("RUNBASE_REDIS_URL", "http://not-redis"),
            ],
            "redis_url",
        ),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{env:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{env:?}: {err}");
    }
}

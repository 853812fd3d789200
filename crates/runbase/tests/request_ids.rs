//! `Request-Id` on every response, and in the log lines of that request (issue 14, item 6): a
//! client's plausible id is kept, anything else replaced; `log_format = "json"` writes one JSON
//! object per line with the request's id in it.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::Value;

#[tokio::test]
async fn every_response_has_a_request_id_and_a_plausible_one_is_kept() {
    let server = Server::start();
    let c = server.client();
    // Errors, the dashboard, health, files: every route, every status.
    let mut seen = std::collections::HashSet::new();
    for path in [
        "/health",
        "/api/v1/runs/run_nope",
        "/api/v1/models",
        "/login",
        "/nope",
    ] {
        let r = c
            .http
            .get(format!("{}{path}", c.base))
            .send()
            .await
            .unwrap();
        let id = r
            .headers()
            .get("request-id")
            .unwrap()
            .to_str()
            .unwrap()
            .to_owned();
        assert!(id.starts_with("req_") && id.len() == 24, "{path}: {id}");
        assert!(seen.insert(id), "ids are unique");
    }
    let kept = c
        .http
        .get(format!("{}/health", c.base))
        .header("request-id", "trace-7f3a.b_9")
        .send()
        .await
        .unwrap();
    assert_eq!(kept.headers()["request-id"], "trace-7f3a.b_9");
    for bad in ["has space", "x".repeat(65).as_str(), "semi;colon", ""] {
        let r = c
            .http
            .get(format!("{}/health", c.base))
            .header("request-id", bad)
            .send()
            .await
            .unwrap();
        let id = r.headers()["request-id"].to_str().unwrap();
        assert!(
            id.starts_with("req_") && id != bad,
            "{bad:?} was replaced: {id}"
        );
    }
}

/// A request over the header limits is answered before any route, on the API's paths (the
/// envelope) and on a page's (the error page) alike: with a request id, and the connection
/// closed.
#[tokio::test]
async fn the_header_limits_answer_carries_a_request_id() {
    let server = Server::start();
    let c = server.client();
    for (path, page) in [("/api/v1/models", false), ("/login", true)] {
        let mut req = c
            .http
            .get(format!("{}{path}", c.base))
            .header("accept", "text/html");
        for i in 0..=100 {
            req = req.header(format!("x-h{i}"), "v");
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), 431, "{path}");
        let id = r.headers()["request-id"].to_str().unwrap().to_owned();
        assert!(id.starts_with("req_"), "{path}: {id}");
        assert_eq!(r.headers()["connection"], "close", "{path}");
        let html = r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html");
        assert_eq!(html, page, "{path}: a page for a page's path only");
    }
}

/// The body limit's `413`, answered once the handler reads the body, carries the request's id
/// like every other answer.
#[tokio::test]
async fn the_body_limit_answer_carries_a_request_id() {
    let server = Server::start();
    let key = server.account("big-body@example.com", 100);
    let c = server.client();
    let big = format!(
        r#"{{"model":"runbase/echo","input":{{"text":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let r = c
        .http
        .post(format!("{}/api/v1/runs", c.base))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .header("request-id", "client-413")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(r.headers()["request-id"], "client-413");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
}

#[tokio::test]
async fn json_logs_carry_the_request_id_of_the_request_that_logged() {
    let server = Server::start_with(&[
        ("RUNBASE_LOG_FORMAT", "json"),
        ("RUNBASE_LOG", "info,tower_http=debug"),
    ]);
    let c = server.client();
    let r = c
        .http
        .get(format!("{}/api/v1/runs/run_nope", c.base))
        .header("request-id", "find-me-in-the-log")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // tower-http logs each request's start and end at debug level, inside the request's span.
    let mut found = false;
    for _ in 0..50 {
        let log = server.log();
        found = log
            .lines()
            .filter(|l| l.contains("find-me-in-the-log"))
            .any(|l| {
                let line: Value =
                    serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
                line["span"]["request_id"] == "find-me-in-the-log"
            });
        if found {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(found, "a log line with the request's id:\n{}", server.log());
    for line in server.log().lines().filter(|l| l.starts_with('{')) {
        serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    }
}

#[test]
fn an_unknown_log_format_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_runbase"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("RUNBASE_LOG_FORMAT", "xml")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("log_format"));
}

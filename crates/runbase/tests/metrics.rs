//! Operator metrics (issue 14, item 6): Prometheus text on `--metrics-listen`, apart from the
//! API, counting requests by route and status, runs, the queue, provider calls and rate-limit
//! refusals.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{Server, free_address, sample, scrape};
use serde_json::json;

/// A new account with a key, and one echo run of it created and waited for to its end.
async fn echo_run(server: &Server, email: &str) -> (String, String) {
    server.account(email, 100);
    let key = server.key(email, &[]);
    let c = server.client();
    let created = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "hi"}}),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap().to_owned();
    c.wait(&key, &id).await;
    (key, id)
}

#[tokio::test]
async fn metrics_count_requests_runs_the_queue_providers_and_refusals() {
    let at = free_address();
    let server = Server::start_with(&[
        ("RUNBASE_METRICS_LISTEN", at.as_str()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "3"),
    ]);
    let metrics_url = format!("http://{at}/metrics");
    let (key, id) = echo_run(&server, "m@example.com").await;
    let c = server.client();
    // Over the limit of 3 (the create and at least one poll counted): refused, and counted.
    for _ in 0..4 {
        c.run(&key, &id).await;
    }
    let missing = c.get(Some(&key), "/api/v1/runs/run_nope").await;
    assert!(matches!(missing.status, 404 | 429));
    // Invented methods are one label value, whatever they are (no label explosion).
    for invented in ["BREW", "XYZZYPLUGH"] {
        let method = reqwest::Method::from_bytes(invented.as_bytes()).unwrap();
        let r = reqwest::Client::new()
            .request(method, format!("{}/health", server.url))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_client_error(), "{}", r.status());
    }

    let text = scrape(&metrics_url).await;
    assert!(text.contains(r#"method="other""#), "{text}");
    assert!(
        !text.contains("BREW") && !text.contains("XYZZYPLUGH"),
        "{text}"
    );
    let created_total = sample(&text, r#"runbase_runs_created_total{model="runbase/echo"}"#);
    assert_eq!(created_total, Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"runbase_runs_finished_total{model="runbase/echo",status="succeeded"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"runbase_http_requests_total{route="/api/v1/runs",method="POST",status="201"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            &text,
            r#"runbase_http_requests_total{route="/api/v1/runs/{id}",method="GET",status="429"}"#
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        sample(&text, r#"runbase_rate_limited_total{limiter="runs"}"#).is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert!(
        text.contains(r#"runbase_http_request_duration_seconds_bucket{le="#)
            || text.contains("runbase_http_request_duration_seconds_bucket{route="),
        "{text}"
    );
    assert_eq!(
        sample(&text, "runbase_run_pickup_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"runbase_provider_call_duration_seconds_count{model="runbase/echo",status="succeeded"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "runbase_queue_runs_pending"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "runbase_queue_runs_processing"),
        Some(0.0),
        "{text}"
    );
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    // Not on the API's address.
    let on_api = reqwest::get(format!("{}/metrics", server.url))
        .await
        .unwrap();
    assert_eq!(on_api.status(), 404);
}

/// The metrics port is bounded like the API's: idle connections from one address take at most
/// 16 places, so they cannot keep a scraper (from another address, or after they go) out.
#[tokio::test]
async fn idle_connections_cannot_fill_the_metrics_port() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let at = free_address();
    let _server = Server::start_with(&[("RUNBASE_METRICS_LISTEN", at.as_str())]);
    let scrape = |at: String| async move {
        let mut c = tokio::net::TcpStream::connect(&at).await.unwrap();
        if c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .is_err()
        {
            return false;
        }
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            c.read_to_end(&mut answer),
        )
        .await;
        matches!(read, Ok(Ok(_))) && answer.starts_with(b"HTTP/1.1 200")
    };
    assert!(scrape(at.clone()).await);
    // The server gives that scrape's place back once its answer has been sent and the
    // connection has ended, which can be a moment after we read it: wait as the end of this test
    // does, before the places are counted.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    // 17 connections that never send a byte: 16 hold every place of 127.0.0.1 and one is
    // refused (if the scrape's place came back late after all, the scrape took the 16th and one
    // of the idle ones was refused: then 15 are held, and the count below says so).
    let mut idle = Vec::new();
    for _ in 0..17 {
        idle.push(tokio::net::TcpStream::connect(&at).await.unwrap());
    }
    // Once the server has taken them (on a busy machine that can take longer than a moment; a
    // scrape that got in before is answered and closed, and does not hold a place).
    let mut refused = false;
    for _ in 0..50 {
        if !scrape(at.clone()).await {
            refused = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(refused, "a connection past 16 from one address is refused");
    // Exactly 16 are held: a refused one was closed at once (its read ends), a held one is
    // waiting for a request (its read does not).
    let held = futures_util::future::join_all(idle.iter_mut().map(|c| async move {
        let mut byte = [0u8; 1];
        tokio::time::timeout(std::time::Duration::from_millis(500), c.read(&mut byte))
            .await
            .is_err()
    }))
    .await;
    assert_eq!(held.iter().filter(|h| **h).count(), 16, "{held:?}");
    drop(idle);
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert!(scrape(at).await, "the places come back");
}

/// An idle worker waits between claims (for a queue signal or its poll interval) instead of
/// asking the queue in a loop: a regression test for a worker that claimed without pause once
/// its queue was empty (about 84% of a core at idle). A run is then claimed as usual.
#[tokio::test]
async fn an_idle_worker_claims_once_per_poll_interval() {
    let at = free_address();
    let server = Server::start_with(&[
        ("RUNBASE_METRICS_LISTEN", at.as_str()),
        ("RUNBASE_WORKER__POLL_INTERVAL_MS", "200"),
    ]);
    let metrics_url = format!("http://{at}/metrics");
    let claims = |text: &str, result: &str| {
        sample(
            text,
            &format!(r#"runbase_worker_claims_total{{result="{result}"}}"#),
        )
        .unwrap_or(0.0)
    };
    let before = claims(&scrape(&metrics_url).await, "empty");
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let idle = claims(&scrape(&metrics_url).await, "empty") - before;
    // About ten at one claim per 200 ms; a worker asking in a loop makes thousands.
    assert!(
        (1.0..=30.0).contains(&idle),
        "{idle} empty claims in 2 s of idle"
    );

    echo_run(&server, "idle@example.com").await;
    let text = scrape(&metrics_url).await;
    assert_eq!(
        sample(
            &text,
            r#"runbase_runs_finished_total{model="runbase/echo",status="succeeded"}"#
        ),
        Some(1.0),
        "{text}"
    );
}

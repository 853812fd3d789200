//! The `runbase-client` crate against the real binary: create, get, cancel, list across pages,
//! wait, downloads, typed errors with their status and `Request-Id`, and the 429 retries that
//! wait for `Retry-After`.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use futures_util::TryStreamExt;
use runbase_client::{Client, Error, ErrorCode, RunStatus, WaitOptions};
use serde_json::json;
use std::time::{Duration, Instant};

fn client(s: &Server, key: &str) -> Client {
    Client::new(&s.url, key).unwrap()
}

/// The API error of a call that must fail with one.
#[track_caller]
fn api_error<T: std::fmt::Debug>(r: Result<T, Error>) -> runbase_client::ApiError {
    match r {
        Err(Error::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_get_cancel_and_idempotent_creates() {
    let s = Server::start();
    let key = s.account("client@example.com", 100);
    let c = client(&s, &key);

    let run = c
        .create("runbase/echo", json!({"text": "hi", "delay_ms": 30000}))
        .await
        .unwrap();
    assert!(run.id.starts_with("run_"), "{run:?}");
    assert_eq!(run.model, "runbase/echo");
    assert_eq!(run.status, RunStatus::Pending);
    assert_eq!(run.cost_usd, 10_000, "1 cent in micro-USD");
    assert_eq!(run.input, json!({"text": "hi", "delay_ms": 30000}));
    assert!(run.created_at.ends_with('Z'), "{}", run.created_at);

    let read = c.get(&run.id).await.unwrap();
    assert_eq!(read.id, run.id);
    assert!(!read.status.is_terminal(), "{read:?}");

    let canceled = c.cancel(&run.id).await.unwrap();
    assert_eq!(canceled.status, RunStatus::Canceled);
    assert_eq!(c.get(&run.id).await.unwrap().status, RunStatus::Canceled);
    // Canceled: refunded in full.
    assert_eq!(s.client().balance(&key).await, json!(100));

    // The same Idempotency-Key and input: the same run, charged once.
    let input = json!({"text": "once"});
    let first = c
        .create_idempotent("runbase/echo", input.clone(), "order-4711")
        .await
        .unwrap();
    let again = c
        .create_idempotent("runbase/echo", input, "order-4711")
        .await
        .unwrap();
    assert_eq!(first.id, again.id);
    assert_eq!(s.client().balance(&key).await, json!(99));
    let mismatch = api_error(
        c.create_idempotent("runbase/echo", json!({"text": "other"}), "order-4711")
            .await,
    );
    assert_eq!(mismatch.code, ErrorCode::IdempotencyKeyMismatch);
    assert_eq!(mismatch.status, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_follows_the_cursor_across_pages() {
    let s = Server::start();
    let key = s.account("list@example.com", 100);
    let c = client(&s, &key);
    let mut created = Vec::new();
    for i in 0..7 {
        let run = c
            .create("runbase/echo", json!({"text": format!("run {i}")}))
            .await
            .unwrap();
        created.push(run.id);
    }
    // Another account's runs are not listed.
    let other = client(&s, &s.account("other@example.com", 100));
    other
        .create("runbase/echo", json!({"text": "not mine"}))
        .await
        .unwrap();

    // Pages of 3: three pages, the last one short.
    let page = c.list_page(Some(3), None).await.unwrap();
    assert_eq!(page.data.len(), 3);
    assert!(page.has_more);
    let listed: Vec<String> = c
        .list_with_page_size(3)
        .map_ok(|r| r.id)
        .try_collect()
        .await
        .unwrap();
    // The server's own order (newest first), from one page that holds them all.
    let all = c.list_page(Some(100), None).await.unwrap();
    assert!(!all.has_more);
    let server_order: Vec<String> = all.data.into_iter().map(|r| r.id).collect();
    assert_eq!(listed, server_order);
    let mut sorted = listed.clone();
    sorted.sort();
    created.sort();
    assert_eq!(sorted, created, "every run once, and only this account's");
    // The default page size sees the same runs.
    let default: Vec<String> = c.list().map_ok(|r| r.id).try_collect().await.unwrap();
    assert_eq!(default, server_order);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_until_succeeded_then_download_the_outputs() {
    let s = Server::start();
    let key = s.account("wait@example.com", 100);
    let c = client(&s, &key);
    let run = c
        .create(
            "runbase/placeholder-image",
            json!({"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"}),
        )
        .await
        .unwrap();
    let mut seen = Vec::new();
    let done = c
        .wait_with(&run.id, &WaitOptions::default(), |r| seen.push(r.status))
        .await
        .unwrap();
    assert_eq!(done.status, RunStatus::Succeeded, "{done:?}");
    assert_eq!(seen.last(), Some(&RunStatus::Succeeded));
    assert!(done.completed_at.is_some());
    let urls = done.output_urls();
    assert!(!urls.is_empty(), "{done:?}");

    let dir = tempfile::tempdir().unwrap();
    let saved = c
        .download_outputs(&done, &dir.path().join("out"))
        .await
        .unwrap();
    assert_eq!(saved.len(), urls.len());
    for (url, path) in urls.iter().zip(&saved) {
        assert_eq!(
            std::fs::read(path).unwrap(),
            s.client().download(url).await,
            "{}",
            path.display()
        );
        assert!(path.starts_with(dir.path().join("out")));
    }
    assert!(
        saved[0].extension().is_some_and(|e| e == "png"),
        "{saved:?}"
    );
    // No partial file is left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("out"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), saved.len(), "{names:?}");

    // A failed run is an answer, not an error: its `error` says why.
    let failing = c
        .create("runbase/echo", json!({"text": "x", "fail": "boom"}))
        .await
        .unwrap();
    let failed = c.wait(&failing.id).await.unwrap();
    assert_eq!(failed.status, RunStatus::Failed);
    assert_eq!(
        failed.error.as_ref().map(|e| e.message.as_str()),
        Some("boom")
    );

    // The overall timeout gives up with the last state seen.
    let slow = c
        .create("runbase/echo", json!({"text": "x", "delay_ms": 30000}))
        .await
        .unwrap();
    let options = WaitOptions {
        poll_interval: Duration::from_millis(100),
        timeout: Some(Duration::from_millis(500)),
    };
    let started = Instant::now();
    match c.wait_with(&slow.id, &options, |_| {}).await {
        Err(Error::Timeout {
            run: Some(last), ..
        }) => {
            assert_eq!(last.id, slow.id);
            assert!(!last.status.is_terminal());
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(started.elapsed() < Duration::from_secs(5));
    c.cancel(&slow.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_typed_with_status_and_request_id() {
    let s = Server::start();
    let key = s.account("errors@example.com", 100);
    let c = client(&s, &key);

    let e = api_error(
        client(&s, "sk-not-a-real-key")
            .get("run_doesnotexist")
            .await,
    );
    assert_eq!((e.code, e.status), (ErrorCode::InvalidApiKey, 401));
    assert_eq!(e.code_str, "invalid_api_key");
    assert!(
        e.request_id
            .as_deref()
            .is_some_and(|id| id.starts_with("req_")),
        "{e:?}"
    );
    assert!(!e.message.is_empty());

    // A new account has no credit (no welcome credit configured): 402.
    let broke = client(&s, &s.account("broke@example.com", 0));
    let e = api_error(broke.create("runbase/echo", json!({"text": "x"})).await);
    assert_eq!((e.code, e.status), (ErrorCode::InsufficientBalance, 402));

    let e = api_error(c.get("run_doesnotexist").await);
    assert_eq!((e.code, e.status), (ErrorCode::RunNotFound, 404));
    let e = api_error(c.cancel("run_doesnotexist").await);
    assert_eq!(e.code, ErrorCode::RunNotFound);

    let e = api_error(c.create("runbase/echo", json!({"delay_ms": 5})).await);
    assert_eq!((e.code, e.status), (ErrorCode::InvalidInput, 400));
    let e = api_error(c.create("nobody/nothing", json!({})).await);
    assert_eq!((e.code, e.status), (ErrorCode::ModelNotFound, 400));

    // A key whose quota is used up: 429 USAGE_EXCEEDED, not retried (waiting cannot help).
    let quota = client(&s, &s.key("errors@example.com", &["--quota", "1"]));
    quota
        .create("runbase/echo", json!({"text": "x"}))
        .await
        .unwrap();
    let started = Instant::now();
    let e = api_error(quota.create("runbase/echo", json!({"text": "x"})).await);
    assert_eq!((e.code, e.status), (ErrorCode::UsageExceeded, 429));
    assert!(started.elapsed() < Duration::from_secs(1), "not retried");

    // Nobody listens there: a transport error, no status.
    let dead = Client::new("http://127.0.0.1:9", &key).unwrap();
    let err = dead.get("run_x").await.unwrap_err();
    assert!(matches!(err, Error::Transport(_)), "{err:?}");
    assert_eq!(err.code(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limited_calls_wait_for_retry_after() {
    // 2 requests per 3 s: the third is refused with Retry-After of up to 3 s.
    let s = Server::start_with(&[
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "2"),
        ("RUNBASE_RATE_LIMITS__RUNS__WINDOW_SECS", "3"),
    ]);
    let key = s.account("limited@example.com", 100);
    // Without retries the 429 comes back typed, with its Retry-After.
    let no_retry = client(&s, &key).with_rate_limit_backoff(Vec::new());
    let run = no_retry
        .create("runbase/echo", json!({"text": "x"}))
        .await
        .unwrap();
    no_retry.get(&run.id).await.unwrap();
    let e = api_error(no_retry.get(&run.id).await);
    assert_eq!((e.code, e.status), (ErrorCode::RateLimited, 429));
    let retry_after = e.retry_after.expect("Retry-After on a 429");
    assert!(
        retry_after >= Duration::from_secs(1) && retry_after <= Duration::from_secs(3),
        "{retry_after:?}"
    );

    // One retry, planned 100 ms later: only waiting for Retry-After lets it through (a retry
    // after 100 ms would be refused again and the call would fail).
    let patient = client(&s, &key).with_rate_limit_backoff(vec![Duration::from_millis(100)]);
    let started = Instant::now();
    let e = api_error(no_retry.get(&run.id).await);
    let retry_after = e.retry_after.unwrap();
    let read = patient.get(&run.id).await.unwrap();
    assert_eq!(read.id, run.id);
    assert!(
        started.elapsed() >= retry_after - Duration::from_millis(50),
        "waited {:?}, Retry-After {retry_after:?}",
        started.elapsed()
    );

    // The default client (1 s, 2 s, 4 s) rides out a burst that exhausts the window: every
    // call succeeds.
    let c = client(&s, &key);
    for _ in 0..4 {
        c.get(&run.id).await.unwrap();
    }
}

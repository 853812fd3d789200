//! Live run events (`GET /api/v1/runs/{id}/events`, Server-Sent Events) and waiting creates
//! (`Prefer: wait=N` on `POST /api/v1/runs`), as a client sees them.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Client, Server, on_postgres, relaxed};
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// One event of a stream.
#[derive(Debug, Clone)]
struct Event {
    name: String,
    id: u64,
    run: Value,
}

/// An open event stream, read as a client reads it: chunk by chunk.
struct Stream {
    resp: reqwest::Response,
    buf: String,
    ended: bool,
}

impl Stream {
    /// The next event; `None` once the server has ended the stream. Keep-alive comments are
    /// skipped. Panics when no event (or end) comes within 30 s.
    async fn next(&mut self) -> Option<Event> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(at) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..at + 2).collect();
                if let Some(event) = parse(&block) {
                    return Some(event);
                }
                continue;
            }
            if self.ended {
                assert!(
                    self.buf.trim().is_empty(),
                    "a partial event: {:?}",
                    self.buf
                );
                return None;
            }
            let chunk = tokio::time::timeout_at(deadline, self.resp.chunk())
                .await
                .expect("an event or the end within 30 s")
                .expect("reading the stream");
            match chunk {
                Some(bytes) => self.buf.push_str(std::str::from_utf8(&bytes).unwrap()),
                None => self.ended = true,
            }
        }
    }

    /// Every event up to the end of the stream.
    async fn rest(&mut self) -> Vec<Event> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}

/// An event block (`event:`, `id:`, `data:` lines); `None` for a comment alone.
fn parse(block: &str) -> Option<Event> {
    let (mut name, mut id, mut data) = (None, None, String::new());
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim().to_owned());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = Some(v.trim().parse().expect("numeric id"));
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
        } else {
            assert!(line.is_empty() || line.starts_with(':'), "line {line:?}");
        }
    }
    let name = name?;
    Some(Event {
        name,
        id: id.expect("every event has an id"),
        run: serde_json::from_str(&data).expect("JSON data"),
    })
}

/// Opens the events of `run_id`: the response when it is not a stream (an error, a 204).
async fn open(
    c: &Client,
    key: &str,
    run_id: &str,
    last_event_id: Option<&str>,
) -> Result<Stream, (u16, reqwest::header::HeaderMap, String)> {
    let mut req = c
        .http
        .get(format!("{}/api/v1/runs/{run_id}/events", c.base))
        .bearer_auth(key);
    if let Some(id) = last_event_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    let is_stream = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    if resp.status() != 200 || !is_stream {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        return Err((status, headers, resp.text().await.unwrap()));
    }
    Ok(Stream {
        resp,
        buf: String::new(),
        ended: false,
    })
}

async fn stream(c: &Client, key: &str, run_id: &str, last_event_id: Option<&str>) -> Stream {
    match open(c, key, run_id, last_event_id).await {
        Ok(s) => s,
        Err((status, _, body)) => panic!("no stream: {status} {body}"),
    }
}

/// The error code of a refused open.
async fn refused(c: &Client, key: &str, run_id: &str) -> (u16, String) {
    let Err((status, _, body)) = open(c, key, run_id, None).await else {
        panic!("a stream was opened");
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    (status, body["error"]["code"].as_str().unwrap().to_owned())
}

async fn create(c: &Client, key: &str, body: Value) -> String {
    let r = c.create(key, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

fn echo(delay_ms: u64) -> Value {
    json!({"model": "runbase/echo", "input": {"text": "live", "delay_ms": delay_ms}})
}

/// One worker slot, taken by a run of `busy_ms`: the runs created next wait in the queue.
async fn occupy_the_worker(c: &Client, key: &str, busy_ms: u64) -> String {
    let busy = create(c, key, echo(busy_ms)).await;
    c.wait_for_status(key, &busy, "processing").await;
    busy
}

fn one_worker() -> Vec<(&'static str, &'static str)> {
    let mut env = relaxed();
    env.push(("RUNBASE_WORKER__CONCURRENCY", "1"));
    env
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_follow_a_run_from_queued_to_its_output() {
    let s = Server::start_with(&one_worker());
    let key = s.account("live@example.com", 100);
    let c = s.client();

    occupy_the_worker(&c, &key, 1500).await;
    let run = create(&c, &key, echo(1000)).await;
    let mut events = stream(&c, &key, &run, None).await;
    let all = events.rest().await;
    assert_eq!(
        names(&all),
        ["pending", "processing", "succeeded"],
        "{all:?}"
    );
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    for e in &all {
        assert_eq!(e.run["id"], run);
        assert_eq!(e.run["status"], e.name);
    }
    // The last event is the run exactly as GET answers it.
    let got = c.run(&key, &run).await;
    assert_eq!(all[2].run, got.body);
    assert_eq!(got.body["output"]["text"], "live");

    // A run with output files: the terminal event carries their URLs.
    let image = create(
        &c,
        &key,
        json!({"model": "runbase/placeholder-image", "input": {"prompt": "events"}}),
    )
    .await;
    let all = stream(&c, &key, &image, None).await.rest().await;
    let last = all.last().unwrap();
    assert_eq!(last.name, "succeeded", "{all:?}");
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    let url = last.run["output"]["urls"][0].as_str().unwrap();
    assert!(c.download(url).await.starts_with(b"\x89PNG"));

    // A failed run ends the stream with its failure, and a canceled one with its cancel.
    let failed = create(
        &c,
        &key,
        json!({"model": "runbase/echo", "input": {"text": "x", "fail": "no"}}),
    )
    .await;
    let all = stream(&c, &key, &failed, None).await.rest().await;
    assert_eq!(all.last().unwrap().name, "failed", "{all:?}");
    assert_eq!(all.last().unwrap().run["error"]["code"], "model_error");
    let long = create(&c, &key, echo(30_000)).await;
    let mut events = stream(&c, &key, &long, None).await;
    let first = events.next().await.unwrap();
    assert!(["pending", "processing"].contains(&first.name.as_str()));
    let r = c
        .post_raw(Some(&key), &format!("/api/v1/runs/{long}/cancel"), "")
        .await;
    assert_eq!(r.body["status"], "canceled");
    let rest = events.rest().await;
    assert_eq!(rest.last().unwrap().name, "canceled", "{rest:?}");
    assert_eq!(rest.last().unwrap().run, c.run(&key, &long).await.body);
}

/// The "SSE resumes after a dropped connection": a client that reconnects with the
/// last id it saw gets only what it missed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_stream_resumes_after_last_event_id() {
    let s = Server::start_with(&one_worker());
    let key = s.account("resume@example.com", 100);
    let c = s.client();

    occupy_the_worker(&c, &key, 1500).await;
    let run = create(&c, &key, echo(2000)).await;
    let mut events = stream(&c, &key, &run, None).await;
    let pending = events.next().await.unwrap();
    assert_eq!(pending.name, "pending");
    drop(events);

    // Away while the run started: the reconnect begins with `processing`.
    c.wait_for_status(&key, &run, "processing").await;
    let mut events = stream(&c, &key, &run, Some(&pending.id.to_string())).await;
    let processing = events.next().await.unwrap();
    assert_eq!(processing.name, "processing");
    assert!(processing.id > pending.id);
    drop(events);
    // An id this live run has not had (another run's, or made up): its current state, as
    // without one, not a silent stream.
    let mut events = stream(&c, &key, &run, Some("999")).await;
    assert_eq!(events.next().await.unwrap().name, "processing");
    drop(events);

    // Away while it finished: only the terminal event, then the end.
    let done = c.wait(&key, &run).await;
    assert_eq!(done["status"], "succeeded");
    let all = stream(&c, &key, &run, Some(&processing.id.to_string()))
        .await
        .rest()
        .await;
    assert_eq!(names(&all), ["succeeded"], "{all:?}");
    assert!(all[0].id > processing.id);
    assert_eq!(all[0].run, done);

    // Seen it all: 204, which tells an EventSource to stop reconnecting.
    let seen_all = open(&c, &key, &run, Some(&all[0].id.to_string())).await;
    let Err((status, _, body)) = seen_all else {
        panic!("a stream after the last event");
    };
    assert_eq!((status, body.as_str()), (204, ""));
    // Without an id (or with one this server never gave), the current state.
    for last in [None, Some("not-a-number"), Some("")] {
        let all = stream(&c, &key, &run, last).await.rest().await;
        assert_eq!(names(&all), ["succeeded"], "{last:?}: {all:?}");
    }
    // An id past the first state but not the last resumes from there, whichever it names.
    let all = stream(&c, &key, &run, Some(&pending.id.to_string()))
        .await
        .rest()
        .await;
    assert_eq!(names(&all), ["succeeded"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_is_refused_as_a_get_of_the_run_is() {
    let s = Server::start_with(&[
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
        ("RUNBASE_RATE_LIMITS__RUNS__WINDOW_SECS", "3600"),
        ("RUNBASE_WORKER__CONCURRENCY", "1"),
    ]);
    let key = s.account("mine@example.com", 100);
    let other = s.account("theirs@example.com", 100);
    let c = s.client();
    let run = create(&c, &key, echo(0)).await;
    c.wait(&key, &run).await;

    // Another account's run is the same 404 as GET gives, as is an unknown or malformed id.
    assert_eq!(c.run(&other, &run).await.status, 404);
    assert_eq!(
        refused(&c, &other, &run).await,
        (404, "run_not_found".into())
    );
    let unknown = "run_01JBZZZZZZZZZZZZZZZZZZZZZZ";
    assert_eq!(c.run(&key, unknown).await.status, 404);
    assert_eq!(
        refused(&c, &key, unknown).await,
        (404, "run_not_found".into())
    );
    assert_eq!(
        refused(&c, &key, "nonsense").await,
        (404, "run_not_found".into())
    );
    // Bad keys: the same 401s.
    assert_eq!(
        refused(&c, "sk-live-nope", &run).await,
        (401, "invalid_api_key".into())
    );
    let r = c
        .http
        .get(format!("{}/api/v1/runs/{run}/events", c.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "missing_api_key");

    // A stream counts once against the runs limit, however many events it carries.
    occupy_the_worker(&c, &key, 1000).await;
    let long = create(&c, &key, echo(500)).await;
    let mut events = stream(&c, &key, &long, None).await;
    let remaining: u32 = events.resp.headers()["ratelimit-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        names(&events.rest().await),
        ["pending", "processing", "succeeded"]
    );
    let after = c.run(&key, &long).await;
    assert_eq!(
        after.header("ratelimit-remaining"),
        Some((remaining - 1).to_string().as_str())
    );
}

/// A stream is authorized when it opens and checked again as it goes: once its key is disabled,
/// deleted or no longer allows the client, it sends nothing more and ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_ends_once_its_key_may_no_longer_read_the_run() {
    // The periodic re-check is an hour away: only the check before each event can end these.
    let mut env = one_worker();
    env.push(("RUNBASE_EVENTS__RECHECK_SECS", "3600"));
    let s = Server::start_with(&env);
    let watcher = s.account("watched@example.com", 100);
    let other = s.key("watched@example.com", &[]);
    let c = s.client();

    // Disabled: the run's next state (canceled through another key) is not sent.
    let run = create(&c, &other, echo(60_000)).await;
    c.wait_for_status(&other, &run, "processing").await;
    let mut events = stream(&c, &watcher, &run, None).await;
    let seen = events.next().await.unwrap();
    assert_eq!(seen.name, "processing");
    s.cli(&["keys", "disable", &watcher]);
    let r = c
        .post_raw(Some(&other), &format!("/api/v1/runs/{run}/cancel"), "")
        .await;
    assert_eq!(r.body["status"], "canceled", "{}", r.body);
    let rest = events.rest().await;
    assert!(rest.is_empty(), "a disabled key was sent {rest:?}");
    // Enabled again, it may resume and gets what it missed.
    s.cli(&["keys", "enable", &watcher]);
    let all = stream(&c, &watcher, &run, Some(&seen.id.to_string()))
        .await
        .rest()
        .await;
    assert_eq!(names(&all), ["canceled"], "{all:?}");

    // An allowlist that no longer holds the client: the same.
    let run = create(&c, &other, echo(60_000)).await;
    c.wait_for_status(&other, &run, "processing").await;
    let mut events = stream(&c, &watcher, &run, None).await;
    assert_eq!(events.next().await.unwrap().name, "processing");
    s.cli(&["keys", "update", &watcher, "--allow-ip", "192.0.2.1"]);
    c.post_raw(Some(&other), &format!("/api/v1/runs/{run}/cancel"), "")
        .await;
    let rest = events.rest().await;
    assert!(
        rest.is_empty(),
        "a key that no longer allows the client was sent {rest:?}"
    );
}

/// Without another event to send, a stream whose key was deleted ends at the next re-check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_stream_ends_at_the_recheck_after_its_key_is_deleted() {
    let mut env = one_worker();
    env.push(("RUNBASE_EVENTS__RECHECK_SECS", "1"));
    let s = Server::start_with(&env);
    let watcher = s.account("quiet@example.com", 100);
    let other = s.key("quiet@example.com", &[]);
    let c = s.client();
    let run = create(&c, &other, echo(60_000)).await;
    c.wait_for_status(&other, &run, "processing").await;
    let mut events = stream(&c, &watcher, &run, None).await;
    assert_eq!(events.next().await.unwrap().name, "processing");
    s.cli(&["keys", "delete", &watcher]);
    let deleted = Instant::now();
    let rest = events.rest().await;
    assert!(rest.is_empty(), "a deleted key was sent {rest:?}");
    assert!(
        deleted.elapsed() < Duration::from_secs(15),
        "the stream outlived its key by {:?}",
        deleted.elapsed()
    );
    // The run went on: the stream's end was the key's, not the run's.
    assert_eq!(c.run(&other, &run).await.body["status"], "processing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_are_capped_per_key_and_in_duration() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let metrics_at = format!("127.0.0.1:{port}");
    let mut env = relaxed();
    env.push(("RUNBASE_EVENTS__MAX_STREAMS_PER_KEY", "2"));
    env.push(("RUNBASE_EVENTS__MAX_STREAM_SECS", "2"));
    env.push(("RUNBASE_METRICS_LISTEN", &metrics_at));
    let s = Server::start_with(&env);
    let open_streams = || async {
        let text = reqwest::get(format!("http://{metrics_at}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix("runbase_event_streams_open "))
            .map(|v| v.trim().to_owned())
    };
    let key = s.account("cap@example.com", 100);
    let second_key = s.key("cap@example.com", &[]);
    let c = s.client();
    let run = create(&c, &key, echo(60_000)).await;

    let mut one = stream(&c, &key, &run, None).await;
    let two = stream(&c, &key, &run, None).await;
    let Err((status, headers, body)) = open(&c, &key, &run, None).await else {
        panic!("a third stream was opened");
    };
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("too_many_streams"))
    );
    assert!(headers.contains_key("ratelimit-remaining"));
    // The cap is the key's: another key of the account may open its own.
    let other = stream(&c, &second_key, &run, None).await;
    assert_eq!(open_streams().await.as_deref(), Some("3"));

    // A stream ends at the maximum duration (the run is still executing); its slot is free
    // again, and the client resumes where it was.
    let started = Instant::now();
    let seen = one.rest().await;
    assert!(started.elapsed() < Duration::from_secs(20));
    let last = seen.last().unwrap();
    assert!(!["succeeded", "failed", "canceled"].contains(&last.name.as_str()));
    drop((two, other));
    let mut resumed = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    while resumed.is_none() {
        match open(&c, &key, &run, Some(&last.id.to_string())).await {
            Ok(s) => resumed = Some(s),
            Err((429, _, _)) => {
                assert!(Instant::now() < deadline, "the slots were never freed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    // Resumed after the last state seen: nothing new until the run changes; cancel it.
    let r = c
        .post_raw(Some(&key), &format!("/api/v1/runs/{run}/cancel"), "")
        .await;
    assert_eq!(r.body["status"], "canceled");
    let all = resumed.unwrap().rest().await;
    assert_eq!(names(&all), ["canceled"], "{all:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while open_streams().await.as_deref() != Some("0") {
        assert!(Instant::now() < deadline, "streams still counted open");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `POST` with `Prefer: wait=N`; returns the answer and how long it took.
async fn create_waiting(
    c: &Client,
    key: &str,
    body: &Value,
    prefer: &str,
    idempotency_key: Option<&str>,
) -> (common::Resp, Duration) {
    let mut req = c
        .http
        .post(format!("{}/api/v1/runs", c.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .header("prefer", prefer)
        .body(body.to_string());
    if let Some(k) = idempotency_key {
        req = req.header("idempotency-key", k);
    }
    let started = Instant::now();
    let r = c.send(req).await;
    (r, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_answers_the_finished_run_or_the_unfinished_one_in_time() {
    let s = Server::start();
    let key = s.account("wait@example.com", 100);
    let c = s.client();
    let image = json!({"model": "runbase/placeholder-image", "input": {"prompt": "wait"}});

    // A fast model: the create answers the finished run.
    let (r, _) = create_waiting(&c, &key, &image, "wait=20", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("preference-applied"), Some("wait=20"));
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert!(r.body["output"]["urls"][0].is_string());
    assert_eq!(
        r.body,
        c.run(&key, r.body["id"].as_str().unwrap()).await.body
    );
    // A test key's run, simulated, too.
    let test_key = s.key("wait@example.com", &["--test"]);
    let (r, _) = create_waiting(&c, &test_key, &image, "respond-async, wait=20", None).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.header("preference-applied"), Some("wait=20"));

    // A slow one: answered after the wait, unfinished, and it goes on.
    let (r, took) = create_waiting(&c, &key, &echo(30_000), "wait=2", None).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.header("preference-applied"), Some("wait=2"));
    assert!(took >= Duration::from_secs(2), "{took:?}");
    assert!(took < Duration::from_secs(15), "{took:?}");
    assert_eq!(r.body["status"], "processing", "{}", r.body);
    let slow = r.body["id"].as_str().unwrap().to_owned();
    // A failure is a finish too.
    let failing = json!({"model": "runbase/echo", "input": {"text": "x", "fail": "no"}});
    let (r, _) = create_waiting(&c, &key, &failing, "wait=20", None).await;
    assert_eq!(r.body["status"], "failed", "{}", r.body);

    // What is not understood is ignored (RFC 7240): an ordinary create, at once.
    for prefer in [
        "wait=0",
        "wait=61",
        "wait=soon",
        "wait=-1",
        "wait=1.5",
        "wait",
    ] {
        let (r, took) = create_waiting(&c, &key, &echo(30_000), prefer, None).await;
        assert_eq!(r.status, 201, "{prefer}: {}", r.body);
        assert_eq!(r.header("preference-applied"), None, "{prefer}");
        assert!(took < Duration::from_secs(1), "{prefer}: {took:?}");
        let id = r.body["id"].as_str().unwrap();
        c.post_raw(Some(&key), &format!("/api/v1/runs/{id}/cancel"), "")
            .await;
    }
    c.post_raw(Some(&key), &format!("/api/v1/runs/{slow}/cancel"), "")
        .await;

    // With an Idempotency-Key: the first request waits; a retry answers what was recorded
    // when the run was created (the queued run), at once and without waiting again.
    let (first, _) = create_waiting(&c, &key, &image, "wait=20", Some("wait-1")).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.body["status"], "succeeded", "{}", first.body);
    assert_eq!(first.header("preference-applied"), Some("wait=20"));
    let (again, _) = create_waiting(&c, &key, &image, "wait=20", Some("wait-1")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.header("preference-applied"), None);
    assert_eq!(again.body["id"], first.body["id"]);
    assert_eq!(again.body["status"], "pending");
    // Charged once.
    let ledger = s.cli(&["credits", "show", "--account", "wait@example.com"]);
    assert_eq!(
        ledger.matches(first.body["id"].as_str().unwrap()).count(),
        1,
        "{ledger}"
    );
}

/// An API process streams (and waits for) a run that a worker process executes: on PostgreSQL
/// through `NOTIFY` (the re-read safety net is set to an hour, so only a notification can
/// deliver the events in time); on one SQLite data directory, where no notification crosses
/// processes, through the safety net's re-reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_process_streams_a_run_a_worker_process_executes() {
    let recheck = if on_postgres() { "3600" } else { "1" };
    let mut env = relaxed();
    env.push(("RUNBASE_ROLE", "api"));
    env.push(("RUNBASE_EVENTS__RECHECK_SECS", recheck));
    let api = Server::start_with(&env);
    let key = api.account("split@example.com", 100);
    let c = api.client();
    let run = create(&c, &key, echo(1500)).await;
    // No worker yet: the run waits, and so does its stream.
    let mut events = stream(&c, &key, &run, None).await;
    assert_eq!(events.next().await.unwrap().name, "pending");

    let worker_dir = tempfile::tempdir().unwrap();
    let mut worker_env: Vec<(&str, &str)> = vec![
        ("RUNBASE_ROLE", "worker"),
        ("RUNBASE_PUBLIC_URL", &api.url),
        ("RUNBASE_WORKER__POLL_INTERVAL_MS", "50"),
    ];
    let database_url = api.database_url();
    if let Some(url) = &database_url {
        worker_env.push(("RUNBASE_DATABASE_URL", url));
    }
    let dir = if on_postgres() {
        worker_dir.path()
    } else {
        api.dir.as_path()
    };
    let _worker = Server::start_in(dir, &worker_env);

    let rest = events.rest().await;
    assert_eq!(names(&rest), ["processing", "succeeded"], "{rest:?}");
    assert_eq!(rest[1].run["output"]["text"], "live");

    // Prefer: wait on the API process answers the run the worker finished.
    let (r, _) = create_waiting(&c, &key, &echo(200), "wait=30", None).await;
    assert_eq!(r.body["status"], "succeeded", "{}", r.body);
    assert_eq!(r.header("preference-applied"), Some("wait=30"));
}

/// A worker of one call, after quick runs: runs queued behind a long one are claimed one at a
/// time, none taken to wait for the long one's call and then put back (a hostile test saw the
/// run after it step back, `processing` then `pending`, every time).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_of_one_call_puts_nothing_back_after_quick_runs() {
    let s = Server::start_with(&one_worker());
    let key = s.account("one@example.com", 100);
    let c = s.client();
    for _ in 0..25 {
        let quick = create(&c, &key, echo(0)).await;
        c.wait(&key, &quick).await;
    }
    for _ in 0..3 {
        // Created while the first runs: the other two are queued, and claimed when it ends.
        create(&c, &key, echo(40)).await;
        let long = create(&c, &key, echo(300)).await;
        let next = create(&c, &key, echo(0)).await;
        let mut events = stream(&c, &key, &next, None).await;
        let names = names(&events.rest().await)
            .into_iter()
            .map(str::to_owned)
            .collect::<Vec<_>>();
        assert_eq!(names.last().map(String::as_str), Some("succeeded"));
        assert!(
            !names.windows(2).any(|w| w == ["processing", "pending"]),
            "{names:?}"
        );
        c.wait(&key, &long).await;
    }
    assert_eq!(
        s.count("SELECT coalesce(sum(put_backs), 0) FROM runs"),
        0,
        "runs put back"
    );
}

//! Run webhooks (issue 14 item 2), black-box: deliveries reach a receiver in another process
//! (`tests/webhooks/receiver.py`), which verifies each signature with the `standardwebhooks`
//! package from PyPI, an independent implementation of the Standard Webhooks spec. Retries,
//! their survival of a restart, secret rotation, the delivery log and bad input.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The test-tools virtualenv's python (it has `standardwebhooks`), or `None` to skip.
fn python() -> Option<PathBuf> {
    match std::env::var_os("RUNBASE_TEST_COG_VENV") {
        Some(v) => Some(PathBuf::from(v).join("bin/python")),
        None => {
            assert!(
                std::env::var_os("CI").is_none(),
                "RUNBASE_TEST_COG_VENV must be set under CI (scripts/test installs standardwebhooks)"
            );
            eprintln!("skipped: run through scripts/test, which installs standardwebhooks");
            None
        }
    }
}

struct Receiver {
    child: Child,
    url: String,
    log: PathBuf,
    secrets: PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Receiver {
    /// A receiver that answers 500 to its first `fail_first` requests, then 200.
    fn start(python: &Path, fail_first: u32) -> Receiver {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("received.jsonl");
        let secrets = dir.path().join("secrets.txt");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/webhooks/receiver.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg("--secrets")
            .arg(&secrets)
            .arg("--log")
            .arg(&log)
            .args(["--fail-first", &fail_first.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the receiver");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("receiver said {line:?}"))
            .to_owned();
        Receiver {
            child,
            url: format!("http://127.0.0.1:{port}/hooks/runbase"),
            log,
            secrets,
            _dir: dir,
        }
    }

    /// The secrets it verifies against, in order.
    fn trust(&self, secrets: &[&str]) {
        std::fs::write(&self.secrets, secrets.join("\n")).unwrap();
    }

    fn received(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// Waits until it has received `n` requests; returns them.
    async fn wait_for(&self, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.received();
            if got.len() >= n {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "received {} of {n} deliveries: {got:?}",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn env_with(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut env = common::relaxed();
    env.extend_from_slice(extra);
    env
}

fn server(extra: &[(&'static str, &'static str)]) -> Server {
    Server::start_with(&env_with(extra))
}

const PRIVATE_OK: (&str, &str) = ("RUNBASE_WEBHOOKS__ALLOW_PRIVATE_TARGETS", "true");

fn secret(s: &Server, email: &str, rotate: bool) -> String {
    let mut args = vec!["webhooks", "secret", "--account", email];
    if rotate {
        args.push("--rotate");
    }
    let out = s.cli(&args).trim().to_owned();
    assert!(out.starts_with("whsec_") && !out.contains('\n'), "{out:?}");
    out
}

async fn deliveries(c: &common::Client, key: &str, id: &str) -> Value {
    let r = c
        .get(Some(key), &format!("/api/v1/runs/{id}/deliveries"))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.body
}

/// Polls the delivery log until `done` holds.
async fn wait_log(c: &common::Client, key: &str, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = deliveries(c, key, id).await;
        if done(&log) {
            return log;
        }
        assert!(Instant::now() < deadline, "delivery log stuck at {log}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_delivered(n: usize) -> impl Fn(&Value) -> bool {
    move |log| {
        let data = log["data"].as_array().unwrap();
        data.len() == n && data.iter().all(|d| d["status"] == "delivered")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_and_completed_deliveries_are_signed_and_carry_the_run() {
    let Some(py) = python() else { return };
    let rx = Receiver::start(&py, 0);
    let s = server(&[PRIVATE_OK]);
    let key = s.account("hooks@example.com", 10);
    let whsec = secret(&s, "hooks@example.com", false);
    // Asked again: the same secret.
    assert_eq!(secret(&s, "hooks@example.com", false), whsec);
    // A wrong secret first: each delivery must verify with the right one only.
    rx.trust(&["whsec_QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo0NTY3ODk=", &whsec]);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "hooked", "delay_ms": 2500},
                   "webhook": rx.url, "webhookEvents": ["start", "completed"]}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let done = c.wait(&key, &id).await;
    let got = rx.wait_for(2).await;
    let log = wait_log(&c, &key, &id, all_delivered(2)).await;

    assert_eq!(got.len(), 2, "{got:?}");
    let bodies: Vec<Value> = got
        .iter()
        .map(|g| serde_json::from_str(g["body"].as_str().unwrap()).unwrap())
        .collect();
    for g in &got {
        assert_eq!(g["verified"], json!([false, true]), "{g}");
        assert_eq!(g["contentType"], "application/json");
        assert!(g["id"].as_str().unwrap().starts_with("msg_"));
        assert_eq!(g["signature"].as_str().unwrap().split(' ').count(), 1);
    }
    assert_ne!(got[0]["id"], got[1]["id"]);
    // `start` carries the run as it was when sent (still processing: the dispatcher looks at
    // the outbox every second); `completed` the finished run,
    // exactly the object GET /api/v1/runs/{id} answers.
    assert_eq!(bodies[0]["id"], id.as_str());
    assert_eq!(bodies[0]["status"], "processing");
    assert_eq!(bodies[1], done);
    assert_eq!(bodies[1]["output"]["text"], "hooked");

    let data = log["data"].as_array().unwrap();
    assert_eq!(data[0]["event"], "start");
    assert_eq!(data[1]["event"], "completed");
    for d in data {
        assert_eq!(d["url"], rx.url.as_str());
        let attempts = d["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{d}");
        assert_eq!(attempts[0]["attempt"], 1);
        assert_eq!(attempts[0]["httpStatus"], 200);
        assert!(attempts[0]["latencyMs"].is_u64());
        assert!(attempts[0]["error"].is_null());
        assert!(attempts[0]["at"].as_str().unwrap().ends_with('Z'));
    }
    let ids: Vec<&Value> = data.iter().map(|d| &d["id"]).collect();
    assert_eq!(ids, [&got[0]["id"], &got[1]["id"]]);

    // Without webhookEvents: `completed` only (Replicate's default). Without webhook: nothing.
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "default"}, "webhook": rx.url}),
        )
        .await;
    let id2 = r.body["id"].as_str().unwrap().to_owned();
    c.wait(&key, &id2).await;
    let log = wait_log(&c, &key, &id2, all_delivered(1)).await;
    assert_eq!(log["data"][0]["event"], "completed");
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "none"}}),
        )
        .await;
    let id3 = r.body["id"].as_str().unwrap().to_owned();
    c.wait(&key, &id3).await;
    assert_eq!(deliveries(&c, &key, &id3).await, json!({"data": []}));
    // A canceled run is `completed` too.
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "stop", "delay_ms": 20000},
                   "webhook": rx.url}),
        )
        .await;
    let id4 = r.body["id"].as_str().unwrap().to_owned();
    let r = c
        .post_raw(Some(&key), &format!("/api/v1/runs/{id4}/cancel"), "")
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    wait_log(&c, &key, &id4, all_delivered(1)).await;
    let got = rx.wait_for(4).await;
    let last: Value = serde_json::from_str(got[3]["body"].as_str().unwrap()).unwrap();
    assert_eq!(last["status"], "canceled");
    assert_eq!(got[3]["verified"], json!([false, true]));
}

/// A receiver that fails once: the delivery is retried (same `webhook-id`) and both attempts
/// are in the log. The retry waits in the store: a server killed while it waits delivers it
/// after its restart ("webhook retries survive a restart").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_retries_survive_a_restart() {
    let Some(py) = python() else { return };
    let rx = Receiver::start(&py, 1);
    // The first retry comes 1.5 to 3 s after the failure: time to kill the server first.
    let s = server(&[PRIVATE_OK, ("RUNBASE_WEBHOOKS__RETRY_BASE_MS", "3000")]);
    let key = s.account("retry@example.com", 10);
    let whsec = secret(&s, "retry@example.com", false);
    rx.trust(&[&whsec]);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "again"}, "webhook": rx.url}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let log = wait_log(&c, &key, &id, |l| {
        l["data"][0]["attempts"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    })
    .await;
    let d = &log["data"][0];
    assert_eq!(d["status"], "pending", "{d}");
    assert!(d["nextAttemptAt"].is_string(), "{d}");
    assert_eq!(d["attempts"][0]["httpStatus"], 500);
    assert!(
        d["attempts"][0]["error"].as_str().unwrap().contains("500"),
        "{d}"
    );

    // Crash while the retry waits; a new process sends it.
    let s = s.restart();
    let c = s.client();
    let log = wait_log(&c, &key, &id, all_delivered(1)).await;
    let attempts = log["data"][0]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2, "{log}");
    assert_eq!(attempts[1]["attempt"], 2);
    assert_eq!(attempts[1]["httpStatus"], 200);
    let got = rx.wait_for(2).await;
    assert_eq!(got.len(), 2);
    assert_eq!(got[0]["id"], got[1]["id"], "one webhook-id across retries");
    assert_eq!(got[0]["answered"], 500);
    assert_eq!(got[1]["answered"], 200);
    for g in &got {
        assert_eq!(g["verified"], json!([true]), "{g}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_secret_and_the_previous_one_both_verify_during_the_overlap() {
    let Some(py) = python() else { return };
    let rx = Receiver::start(&py, 0);
    let s = server(&[PRIVATE_OK]);
    let key = s.account("rotate@example.com", 10);
    let old = secret(&s, "rotate@example.com", false);
    let new = secret(&s, "rotate@example.com", true);
    assert_ne!(old, new);
    assert_eq!(secret(&s, "rotate@example.com", false), new);
    rx.trust(&[&old, &new]);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "rotated"}, "webhook": rx.url}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    wait_log(&c, &key, &id, all_delivered(1)).await;
    let got = rx.wait_for(1).await;
    // Two signatures, space-separated; each secret alone verifies the delivery.
    assert_eq!(got[0]["signature"].as_str().unwrap().split(' ').count(), 2);
    assert_eq!(got[0]["verified"], json!([true, true]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_subscriptions_are_refused_and_logs_are_private() {
    let s = server(&[]);
    let key = s.account("bad@example.com", 10);
    let c = s.client();
    let long = format!("https://example.com/{}", "a".repeat(2100));
    for (body, field) in [
        (json!({"webhook": "not a url"}), "webhook"),
        (json!({"webhook": "ftp://example.com/x"}), "webhook"),
        (json!({"webhook": long}), "webhook"),
        (json!({"webhook": 42}), "webhook"),
        (
            json!({"webhook": "https://example.com/h", "webhookEvents": ["finished"]}),
            "webhookEvents",
        ),
        (
            json!({"webhook": "https://example.com/h", "webhookEvents": ["completed", "completed"]}),
            "webhookEvents",
        ),
        (
            json!({"webhook": "https://example.com/h", "webhookEvents": "completed"}),
            "webhookEvents",
        ),
    ] {
        let mut body = body;
        body["model"] = json!("runbase/echo");
        body["input"] = json!({"text": "x"});
        let r = c.create(&key, body.clone()).await;
        r.assert_error(400, "invalid_input");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("{field}:")),
            "{body}: {message}"
        );
    }
    // Nothing was charged for them.
    assert_eq!(c.balance(&key).await, json!(10));

    // Another account's run: its deliveries are not found, as the run itself is not.
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "mine"}, "webhook": "https://example.com/h"}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let other = s.account("other@example.com", 0);
    let r = c
        .get(Some(&other), &format!("/api/v1/runs/{id}/deliveries"))
        .await;
    r.assert_error(404, "run_not_found");
    let r = c
        .get(Some(&key), "/api/v1/runs/run_doesnotexist/deliveries")
        .await;
    r.assert_error(404, "run_not_found");
    let r = c.get(None, &format!("/api/v1/runs/{id}/deliveries")).await;
    assert_eq!(r.status, 401, "{}", r.body);
}

/// Without `allow_private_targets`, a webhook on a loopback or private address is refused when
/// it would be sent: the attempt is logged with the reason, and the delivery given up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_targets_are_refused_unless_allowed() {
    let s = server(&[]);
    let key = s.account("ssrf@example.com", 10);
    let c = s.client();
    for target in [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.0.0.1/hook",
        "http://[::1]:9/hook",
    ] {
        let r = c
            .create(
                &key,
                json!({"model": "runbase/echo", "input": {"text": "x"}, "webhook": target}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        let log = wait_log(&c, &key, &id, |l| l["data"][0]["status"] == "failed").await;
        let attempts = log["data"][0]["attempts"].as_array().unwrap();
        assert_eq!(attempts.len(), 1, "{log}");
        assert!(attempts[0]["httpStatus"].is_null());
        assert!(
            attempts[0]["error"]
                .as_str()
                .unwrap()
                .contains("not a public address"),
            "{log}"
        );
    }
}

/// A receiver that hangs (answers nothing until the attempt's timeout) holds a bounded share of
/// the dispatcher: another account's delivery goes out at once beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_does_not_hold_up_other_accounts() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Accepts and never answers; counts the connections it holds.
    let hanging = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hanging_url = format!("http://{}/hang", hanging.local_addr().unwrap());
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let holder = held.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = hanging.accept().await {
            holder.lock().unwrap().push(conn);
        }
    });
    // Answers 200 to anything.
    let prompt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let prompt_url = format!("http://{}/ok", prompt.local_addr().unwrap());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = prompt.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let _ = tokio::time::timeout(Duration::from_millis(200), conn.read(&mut buf)).await;
                let _ = conn
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });

    let s = server(&[PRIVATE_OK, ("RUNBASE_WEBHOOKS__TIMEOUT_SECS", "60")]);
    let flooder = s.account("flood@example.com", 1000);
    let other = s.account("other@example.com", 100);
    let c = s.client();
    for i in 0..40 {
        let r = c
            .create(
                &flooder,
                json!({"model": "runbase/echo", "input": {"text": format!("f{i}")}, "webhook": hanging_url}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // The flooder's deliveries hang, a share of them at a time.
    let deadline = Instant::now() + Duration::from_secs(20);
    while held.lock().unwrap().len() < 8 {
        assert!(
            Instant::now() < deadline,
            "the hanging receiver got {} connections",
            held.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = c
        .create(
            &other,
            json!({"model": "runbase/echo", "input": {"text": "me"}, "webhook": prompt_url}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let id = r.body["id"].as_str().unwrap().to_owned();
    let started = Instant::now();
    wait_log(&c, &other, &id, all_delivered(1)).await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the other account's delivery took {:?} (the hanging receiver's attempts time out after 60 s)",
        started.elapsed()
    );
    // The flooder never had more than its share in flight.
    assert!(
        held.lock().unwrap().len() <= 8,
        "{} held",
        held.lock().unwrap().len()
    );
}

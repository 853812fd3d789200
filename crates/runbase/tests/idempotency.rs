//! `Idempotency-Key` on `POST /api/v1/runs` and `POST /api/v1/runs/{id}/cancel`, as a client
//! sees it (Stripe's semantics): a repeat gets the first answer byte for byte, marked
//! `Idempotent-Replayed: true`, and is never charged; the key with another request is a 409, and
//! so is a repeat while the first is in flight; keys are per account, 1–255 printable ASCII
//! characters; and 100 concurrent creates under one key make one run and one charge. Runs on
//! SQLite, and on PostgreSQL with `RUNBASE_TEST_DATABASE=postgres`.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Client, Server};
use serde_json::{Value, json};

/// A response with its body as bytes.
struct Raw {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

impl Raw {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn replayed(&self) -> Option<&str> {
        self.headers
            .get("idempotent-replayed")
            .map(|v| v.to_str().unwrap())
    }

    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        assert_eq!(self.json()["error"]["code"], code);
    }
}

async fn post(c: &Client, key: &str, path: &str, idem: Option<&[u8]>, body: &str) -> Raw {
    let mut req = c
        .http
        .post(format!("{}{path}", c.base))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(idem) = idem {
        req = req.header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes(idem).unwrap(),
        );
    }
    let r = req.send().await.unwrap();
    Raw {
        status: r.status().as_u16(),
        headers: r.headers().clone(),
        body: r.bytes().await.unwrap().to_vec(),
    }
}

async fn create(c: &Client, key: &str, idem: &str, body: &Value) -> Raw {
    post(
        c,
        key,
        "/api/v1/runs",
        Some(idem.as_bytes()),
        &body.to_string(),
    )
    .await
}

fn echo(text: &str) -> Value {
    json!({"model": "runbase/echo", "input": {"text": text}})
}

/// The account's ledger lines of this kind.
fn ledger_lines(s: &Server, email: &str, kind: &str) -> usize {
    let out = s.cli(&["credits", "show", "--account", email, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == kind)
        .count()
}

async fn run_count(c: &Client, key: &str) -> usize {
    let r = c.get(Some(key), "/api/v1/runs?limit=100").await;
    r.body["data"].as_array().unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_gets_the_first_answer_byte_for_byte_and_is_not_charged_again() {
    let s = Server::start();
    let key = s.account("retry@example.com", 10);
    let c = s.client();
    let first = create(&c, &key, "order-1", &echo("once")).await;
    assert_eq!(first.status, 201, "{}", first.json());
    assert_eq!(first.replayed(), None);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    // The run moves on; the repeat still answers what the first request answered.
    assert_eq!(c.wait(&key, &id).await["status"], "succeeded");
    let again = create(&c, &key, "order-1", &echo("once")).await;
    assert_eq!(again.status, 201);
    assert_eq!(again.body, first.body, "the same bytes");
    assert_eq!(again.replayed(), Some("true"));
    assert_eq!(again.headers["content-type"], "application/json");
    assert!(again.headers.contains_key("ratelimit-remaining"));
    assert_eq!(again.json()["status"], "pending");
    assert_eq!(c.balance(&key).await, 9, "charged once");
    assert_eq!(run_count(&c, &key).await, 1);
    assert_eq!(ledger_lines(&s, "retry@example.com", "run_charge"), 1);
    // Another key of the same account shares the key space (keys are per account).
    let other_key = s.key("retry@example.com", &[]);
    let theirs = create(&c, &other_key, "order-1", &echo("once")).await;
    assert_eq!(theirs.body, first.body);
    assert_eq!(theirs.replayed(), Some("true"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_for_another_request_is_a_409_mismatch() {
    let s = Server::start();
    let key = s.account("mismatch@example.com", 10);
    let c = s.client();
    let first = create(&c, &key, "k", &echo("a")).await;
    assert_eq!(first.status, 201);
    let id = first.json()["id"].as_str().unwrap().to_owned();
    create(&c, &key, "k", &echo("b"))
        .await
        .assert_error(409, "idempotency_key_mismatch");
    // The body's bytes count, not its meaning: the same JSON spelled differently is another
    // request.
    post(
        &c,
        &key,
        "/api/v1/runs",
        Some(b"k"),
        r#"{"model":"runbase/echo","input":{"text":"a"}}"#,
    )
    .await
    .assert_error(409, "idempotency_key_mismatch");
    // Another path is another request.
    post(
        &c,
        &key,
        &format!("/api/v1/runs/{id}/cancel"),
        Some(b"k"),
        "",
    )
    .await
    .assert_error(409, "idempotency_key_mismatch");
    // A test key of the account has keys of its own: the same key and bytes make a simulated
    // run, never answered by the real one nor answering for it, and a key a test key used first
    // is still free for the live integration (a test key, handed to CI, cannot take it).
    let test_key = s.key("mismatch@example.com", &["--test"]);
    let simulated = create(&c, &test_key, "k", &echo("a")).await;
    assert_eq!(simulated.status, 201);
    assert_ne!(simulated.json()["id"], first.json()["id"]);
    let replayed = create(&c, &test_key, "k", &echo("a")).await;
    assert_eq!((replayed.status, &replayed.body), (201, &simulated.body));
    create(&c, &test_key, "k", &echo("b"))
        .await
        .assert_error(409, "idempotency_key_mismatch");
    let tried_first = create(&c, &test_key, "t", &echo("x")).await;
    assert_eq!(tried_first.status, 201);
    let live = create(&c, &key, "t", &echo("a")).await;
    assert_eq!(live.status, 201, "{}", live.json());
    assert_eq!(live.json()["costUsd"], 10_000, "a real run, charged");
    // The first request's answer is untouched.
    let again = create(&c, &key, "k", &echo("a")).await;
    assert_eq!((again.status, &again.body), (201, &first.body));
    assert_eq!(c.balance(&key).await, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_kept_and_what_never_executed_is_not() {
    let s = Server::start();
    let key = s.account("poor@example.com", 0);
    let c = s.client();
    // A refusal of the money checks is kept: topping up does not change the key's answer.
    let refused = create(&c, &key, "poor", &echo("x")).await;
    refused.assert_error(402, "insufficient_balance");
    s.cli(&[
        "credits",
        "add",
        "--account",
        "poor@example.com",
        "--cents",
        "5",
    ]);
    let again = create(&c, &key, "poor", &echo("x")).await;
    assert_eq!((again.status, &again.body), (402, &refused.body));
    assert_eq!(again.replayed(), Some("true"));
    assert_eq!(create(&c, &key, "poor-2", &echo("x")).await.status, 201);

    // A body that fails validation never executed: the key stays free for the right request.
    post(&c, &key, "/api/v1/runs", Some(b"typo"), "{not json")
        .await
        .assert_error(400, "invalid_json");
    create(
        &c,
        &key,
        "typo",
        &json!({"model": "runbase/echo", "input": {}}),
    )
    .await
    .assert_error(400, "invalid_input");
    let fixed = create(&c, &key, "typo", &echo("fixed")).await;
    assert_eq!(fixed.status, 201);
    assert_eq!(fixed.replayed(), None);

    // A 429 is not kept (the quota may be raised), and a repeat of a created run is answered
    // even once the quota that run used up is exhausted.
    let quota_key = s.key("poor@example.com", &["--quota", "1"]);
    let made = create(&c, &quota_key, "q-1", &echo("q")).await;
    assert_eq!(made.status, 201);
    create(&c, &quota_key, "q-2", &echo("q"))
        .await
        .assert_error(429, "USAGE_EXCEEDED");
    let replay = create(&c, &quota_key, "q-1", &echo("q")).await;
    assert_eq!((replay.status, &replay.body), (201, &made.body));
    // q-2 was released: the same key may carry another request.
    create(&c, &quota_key, "q-2", &echo("another"))
        .await
        .assert_error(429, "USAGE_EXCEEDED");
    assert_eq!(ledger_lines(&s, "poor@example.com", "run_charge"), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_scoped_per_account() {
    let s = Server::start();
    let a = s.account("a@example.com", 10);
    let b = s.account("b@example.com", 10);
    let c = s.client();
    let ra = create(&c, &a, "shared", &echo("same")).await;
    let rb = create(&c, &b, "shared", &echo("same")).await;
    assert_eq!((ra.status, rb.status), (201, 201));
    assert_eq!(rb.replayed(), None);
    assert_ne!(ra.json()["id"], rb.json()["id"]);
    // B's run is not A's to see, even through the key.
    assert_eq!(
        c.run(&a, rb.json()["id"].as_str().unwrap()).await.status,
        404
    );
    assert_eq!(
        (c.balance(&a).await, c.balance(&b).await),
        (9.into(), 9.into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_is_1_to_255_printable_ascii_characters() {
    let s = Server::start();
    let key = s.account("len@example.com", 10);
    let c = s.client();
    let longest = "k".repeat(255);
    let ok = create(&c, &key, &longest, &echo("x")).await;
    assert_eq!(ok.status, 201);
    assert_eq!(create(&c, &key, &longest, &echo("x")).await.body, ok.body);
    let too_long = create(&c, &key, &"k".repeat(256), &echo("x")).await;
    too_long.assert_error(400, "invalid_request");
    let message = too_long.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Idempotency-Key") && message.contains("256") && message.contains("255"),
        "{message}"
    );
    for bad in [&b""[..], "clé".as_bytes(), b"a\tb"] {
        post(&c, &key, "/api/v1/runs", Some(bad), &echo("x").to_string())
            .await
            .assert_error(400, "invalid_request");
    }
    // Checked before anything else happens: nothing was charged.
    assert_eq!(c.balance(&key).await, 9);
    // The same goes for cancels.
    let id = ok.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/runs/{id}/cancel");
    post(&c, &key, &path, Some("k".repeat(256).as_bytes()), "")
        .await
        .assert_error(400, "invalid_request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_is_replayed_with_the_run_as_the_first_cancel_left_it() {
    let s = Server::start();
    let key = s.account("cancel@example.com", 10);
    let c = s.client();
    let created = create(
        &c,
        &key,
        "make",
        &json!({"model": "runbase/echo", "input": {"text": "x", "delay_ms": 30000}}),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/runs/{id}/cancel");
    let first = post(&c, &key, &path, Some(b"stop"), "").await;
    assert_eq!(first.status, 200, "{}", first.json());
    assert_eq!(first.json()["status"], "canceled");
    assert_eq!(first.replayed(), None);
    let again = post(&c, &key, &path, Some(b"stop"), "").await;
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(again.replayed(), Some("true"));
    assert_eq!(c.balance(&key).await, 10, "refunded once");
    assert_eq!(ledger_lines(&s, "cancel@example.com", "run_refund"), 1);
    // A refusal is kept too: an unknown run stays unknown under its key.
    let missing = post(&c, &key, "/api/v1/runs/run_nope/cancel", Some(b"nope"), "").await;
    missing.assert_error(404, "run_not_found");
    let again = post(&c, &key, "/api/v1/runs/run_nope/cancel", Some(b"nope"), "").await;
    assert_eq!((again.status, &again.body), (404, &missing.body));
    assert_eq!(again.replayed(), Some("true"));
}

/// A repeat while the first request is executing is `409 idempotency_key_in_use` with
/// `Retry-After: 1`; once the first is answered, the repeat gets its answer.
///
/// On PostgreSQL the first request really is in flight: the test holds its account's row lock,
/// so the request has claimed its key (a statement of its own) but its create waits. On SQLite
/// one writer thread runs the claim and the create back to back, with no moment to hold it in
/// between from outside; there the test writes the key's row as a request in flight leaves it
/// (one in another process, or in one that died), and checks that a retry answers 409 until
/// the claim goes stale, then executes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeat_while_the_first_is_in_flight_is_409_in_use() {
    let s = Server::start();
    let key = s.account("busy@example.com", 10);
    let c = s.client();
    let account = c.get(Some(&key), "/api/v1/account").await.body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let body = echo("slow");
    match s.database_url() {
        Some(url) => {
            let (mut db, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            // A first request really in flight: its create batch waits for the account's row,
            // locked here. Nothing is committed under the key yet; this node knows the key is
            // in flight.
            let tx = db.transaction().await.unwrap();
            tx.execute(
                "SELECT 1 FROM accounts WHERE id = $1 FOR UPDATE",
                &[&account],
            )
            .await
            .unwrap();
            let first = tokio::spawn({
                let (c, key, body) = (c.clone(), key.clone(), body.clone());
                async move { create(&c, &key, "busy", &body).await }
            });
            let (probe, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
                .await
                .unwrap();
            tokio::spawn(conn);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            loop {
                let waiting: i64 = probe
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity
                         WHERE datname = current_database() AND wait_event_type = 'Lock'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                // At least one: another of the server's tasks may be waiting behind the same
                // lock too (once in CI, under load, this loop never saw exactly one in 10 s).
                if waiting >= 1 {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the first create never waited"
                );
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            let busy = create(&c, &key, "busy", &body).await;
            busy.assert_error(409, "idempotency_key_in_use");
            assert_eq!(busy.headers["retry-after"], "1");
            tx.rollback().await.unwrap();
            let first = first.await.unwrap();
            assert_eq!(first.status, 201);
            let again = create(&c, &key, "busy", &body).await;
            assert_eq!((again.status, &again.body), (201, &first.body));

            // A claim in flight in another process (a cancel's, or one whose process died
            // before its create): as on SQLite below.
            let fingerprint = {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(format!("POST\n/api/v1/runs\n{body}").as_bytes());
                hex::encode(h.finalize())
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            probe
                .execute(
                    "INSERT INTO idempotency_keys (account_id, key, fingerprint, run_id, created_at, claimed_at)
                     VALUES ($1, 'elsewhere', $2, 'run_0000000000inflightelse01', $3, $3)",
                    &[&account, &fingerprint, &now],
                )
                .await
                .unwrap();
            let busy = create(&c, &key, "elsewhere", &body).await;
            busy.assert_error(409, "idempotency_key_in_use");
            create(&c, &key, "elsewhere", &echo("other"))
                .await
                .assert_error(409, "idempotency_key_mismatch");
            probe
                .execute(
                    "UPDATE idempotency_keys SET claimed_at = $1 WHERE key = 'elsewhere'",
                    &[&(now - 11_000_000)],
                )
                .await
                .unwrap();
            let retry = create(&c, &key, "elsewhere", &body).await;
            assert_eq!(retry.status, 201);
            assert_eq!(retry.json()["id"], "run_0000000000inflightelse01");
            assert_eq!(create(&c, &key, "elsewhere", &body).await.body, retry.body);
            assert_eq!(c.balance(&key).await, 8);
            assert_eq!(ledger_lines(&s, "busy@example.com", "run_charge"), 2);
            return;
        }
        None => {
            let db = rusqlite::Connection::open(s.dir.join("runbase.db")).unwrap();
            db.busy_timeout(std::time::Duration::from_secs(10)).unwrap();
            let fingerprint = {
                use sha2::Digest;
                let mut h = sha2::Sha256::new();
                h.update(format!("POST\n/api/v1/runs\n{body}").as_bytes());
                hex::encode(h.finalize())
            };
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros() as i64;
            db.execute(
                "INSERT INTO idempotency_keys (account_id, key, fingerprint, run_id, created_at, claimed_at)
                 VALUES (?1, 'busy', ?2, 'run_0000000000inflightbusy01', ?3, ?3)",
                rusqlite::params![account, fingerprint, now],
            )
            .unwrap();
            let busy = create(&c, &key, "busy", &body).await;
            busy.assert_error(409, "idempotency_key_in_use");
            assert_eq!(busy.headers["retry-after"], "1");
            create(&c, &key, "busy", &echo("other"))
                .await
                .assert_error(409, "idempotency_key_mismatch");
            // Ten seconds later the claim is stale: the retry executes, under the run id the
            // first claim chose.
            db.execute(
                "UPDATE idempotency_keys SET claimed_at = ?1 WHERE key = 'busy'",
                [now - 11_000_000],
            )
            .unwrap();
            let retry = create(&c, &key, "busy", &body).await;
            assert_eq!(retry.status, 201);
            assert_eq!(retry.json()["id"], "run_0000000000inflightbusy01");
            assert_eq!(create(&c, &key, "busy", &body).await.body, retry.body);
        }
    }
    assert_eq!(c.balance(&key).await, 9);
    assert_eq!(ledger_lines(&s, "busy@example.com", "run_charge"), 1);
}

/// THE RACE: 100 creates with one key at once, each on its own connection: one run, one charge;
/// every answer is that run (201) or `409 idempotency_key_in_use`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_creates_with_one_key_make_one_run_and_one_charge() {
    let s = Server::start();
    let key = s.account("race@example.com", 100);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        // A client per request: no connection reuse, so the server sees 100 connections.
        let c = Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: s.url.clone(),
        };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            create(&c, &key, "the-one", &echo("race")).await
        }));
    }
    let (mut fresh, mut replayed, mut in_use) = (0, 0, 0);
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        let r = t.await.unwrap();
        match r.status {
            201 => {
                ids.insert(r.json()["id"].as_str().unwrap().to_owned());
                if r.replayed() == Some("true") {
                    replayed += 1;
                } else {
                    fresh += 1;
                }
            }
            409 => {
                r.assert_error(409, "idempotency_key_in_use");
                in_use += 1;
            }
            other => panic!("unexpected {other}: {}", String::from_utf8_lossy(&r.body)),
        }
    }
    eprintln!("race: {fresh} fresh, {replayed} replays, {in_use} in use");
    assert_eq!(
        fresh, 1,
        "one request executed ({replayed} replays, {in_use} in use)"
    );
    assert_eq!(ids.len(), 1);
    let c = s.client();
    assert_eq!(run_count(&c, &key).await, 1);
    assert_eq!(ledger_lines(&s, "race@example.com", "run_charge"), 1);
    assert_eq!(c.balance(&key).await, 99);
}

/// A key the store finds unusable (here disabled while the create's body was on its way, after
/// the key was read) is the API key's state, not the request's answer: the `401` is not kept,
/// and the same request, once the key is enabled again, is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_disabled_during_a_keyed_create_is_not_kept_as_its_answer() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start();
    let key = s.account("midway@example.com", 100);
    let c = s.client();
    let body = echo("midway").to_string();
    let mut conn = tokio::net::TcpStream::connect(s.url.trim_start_matches("http://"))
        .await
        .unwrap();
    let head = format!(
        "POST /api/v1/runs HTTP/1.1\r\nHost: runbase\r\nAuthorization: Bearer {key}\r\n\
         Idempotency-Key: midway\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).await.unwrap();
    conn.write_all(&body.as_bytes()[..5]).await.unwrap();
    // The key is read (and the limiter asked) before the body: give the server that moment.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    s.cli(&["keys", "disable", &key]);
    conn.write_all(&body.as_bytes()[5..]).await.unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert!(answer.contains("invalid_api_key"), "{answer}");

    s.cli(&["keys", "enable", &key]);
    let made = create(&c, &key, "midway", &echo("midway")).await;
    assert_eq!(made.status, 201, "{}", String::from_utf8_lossy(&made.body));
    assert_eq!(made.replayed(), None);
    let again = create(&c, &key, "midway", &echo("midway")).await;
    assert_eq!(again.replayed(), Some("true"));
    assert_eq!(again.body, made.body);
    assert_eq!(ledger_lines(&s, "midway@example.com", "run_charge"), 1);
}

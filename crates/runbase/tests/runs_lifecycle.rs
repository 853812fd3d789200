//! The run lifecycle over HTTP: creation, polling, outputs, money, pagination, models.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::{Value, json};
use std::time::Duration;

/// runbase.net's timestamps: ISO 8601 UTC with exactly three fractional digits and `Z`
/// (`2026-06-01T12:00:04.200Z`).
fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        let b = s.as_bytes();
        let digits = |r: std::ops::Range<usize>| r.clone().all(|i| b[i].is_ascii_digit());
        b.len() == 24
            && digits(0..4)
            && b[4] == b'-'
            && digits(5..7)
            && b[7] == b'-'
            && digits(8..10)
            && b[10] == b'T'
            && digits(11..13)
            && b[13] == b':'
            && digits(14..16)
            && b[16] == b':'
            && digits(17..19)
            && b[19] == b'.'
            && digits(20..23)
            && b[23] == b'Z'
    })
}

#[tokio::test]
async fn create_poll_and_read_an_image() {
    let s = Server::start();
    let key = s.account("img@example.com", 100);
    let c = s.client();
    let r = c.create(&key, json!({"model": "runbase/placeholder-image", "input": {"prompt": "a red fox", "aspect_ratio": "16:9"}})).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let run = &r.body;
    let keys: Vec<&str> = run
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let mut expected = vec![
        "id",
        "model",
        "status",
        "input",
        "output",
        "error",
        "costUsd",
        "createdAt",
        "startedAt",
        "completedAt",
    ];
    expected.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, expected);
    assert!(run["id"].as_str().unwrap().starts_with("run_"));
    assert_eq!(run["model"], "runbase/placeholder-image");
    assert_eq!(run["status"], "pending");
    assert_eq!(
        run["input"],
        json!({"prompt": "a red fox", "aspect_ratio": "16:9"})
    );
    assert_eq!(run["output"], Value::Null);
    assert_eq!(run["error"], Value::Null);
    // 2 cents, as integer micro-USD.
    assert_eq!(run["costUsd"], 20_000);
    assert!(run["costUsd"].is_i64());
    assert!(is_rfc3339(&run["createdAt"]), "{}", run["createdAt"]);
    assert_eq!(run["startedAt"], Value::Null);
    assert_eq!(run["completedAt"], Value::Null);
    // Charged at creation.
    assert_eq!(c.balance(&key).await, json!(98));

    let id = run["id"].as_str().unwrap();
    let done = c.wait(&key, id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert!(is_rfc3339(&done["startedAt"]) && is_rfc3339(&done["completedAt"]));
    assert!(done["createdAt"].as_str() <= done["startedAt"].as_str());
    assert!(done["startedAt"].as_str() <= done["completedAt"].as_str());
    let urls = done["output"]["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1);
    let url = urls[0].as_str().unwrap();
    assert!(url.starts_with(&s.url), "{url}");

    let resp = reqwest::get(url).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "image/png");
    let bytes = resp.bytes().await.unwrap();
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let reader = decoder.read_info().expect("a valid PNG");
    let (w, h) = (reader.info().width, reader.info().height);
    assert_eq!(w * 9, h * 16, "16:9, got {w}x{h}");
    assert_eq!(c.balance(&key).await, json!(98));

    // Deterministic: the same prompt gives the same bytes.
    let again = c.create(&key, json!({"model": "runbase/placeholder-image", "input": {"prompt": "a red fox", "aspect_ratio": "16:9"}})).await;
    let again = c.wait(&key, again.body["id"].as_str().unwrap()).await;
    let bytes2 = c
        .download(again["output"]["urls"][0].as_str().unwrap())
        .await;
    assert_eq!(bytes, bytes2);
    // Unknown files are 404 in the envelope.
    let r = c.get(None, &format!("/files/{id}/nothing.png")).await;
    r.assert_error(404, "not_found");
}

#[tokio::test]
async fn defaults_are_applied_and_stored() {
    let s = Server::start();
    let key = s.account("defaults@example.com", 100);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "square"}}),
        )
        .await;
    assert_eq!(
        r.body["input"],
        json!({"prompt": "square", "aspect_ratio": "1:1"})
    );
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["input"]["aspect_ratio"], "1:1");
    let bytes = c
        .download(done["output"]["urls"][0].as_str().unwrap())
        .await;
    let reader = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()))
        .read_info()
        .unwrap();
    assert_eq!(reader.info().width, reader.info().height);
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x"}}),
        )
        .await;
    assert_eq!(r.body["input"], json!({"text": "x", "delay_ms": 0}));
}

#[tokio::test]
async fn lifecycle_passes_through_processing() {
    let s = Server::start();
    let key = s.account("slow@example.com", 100);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "slow", "delay_ms": 1500}}),
        )
        .await;
    assert_eq!(r.body["status"], "pending");
    let id = r.body["id"].as_str().unwrap().to_owned();
    let mut seen = vec!["pending".to_owned()];
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = c.run(&key, &id).await;
        let st = r.body["status"].as_str().unwrap().to_owned();
        if seen.last() != Some(&st) {
            seen.push(st.clone());
        }
        if st == "processing" {
            assert!(is_rfc3339(&r.body["startedAt"]));
            assert_eq!(r.body["completedAt"], Value::Null);
        }
        if st == "succeeded" {
            assert_eq!(r.body["output"], json!({"text": "slow", "urls": []}));
            break;
        }
        assert!(std::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, ["pending", "processing", "succeeded"]);
}

#[tokio::test]
async fn a_failed_run_is_refunded_in_full() {
    let s = Server::start();
    let key = s.account("fail@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x", "fail": "the model exploded"}}),
        )
        .await;
    assert_eq!(r.status, 201);
    assert_eq!(r.body["costUsd"], 10_000);
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(
        done["error"],
        json!({"message": "the model exploded", "code": "model_error"})
    );
    assert_eq!(done["output"], Value::Null);
    assert!(is_rfc3339(&done["completedAt"]));
    assert_eq!(c.balance(&key).await, json!(10));

    // The ledger shows the top-up, the charge and the refund, and sums to the balance.
    let ledger = s.cli(&["credits", "show", "--account", "fail@example.com"]);
    assert!(ledger.contains("balance 10¢"), "{ledger}");
    let kinds: Vec<&str> = ledger
        .lines()
        .skip(3)
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert_eq!(kinds, ["run_refund", "run_charge", "topup"], "{ledger}");
}

#[tokio::test]
async fn pagination_newest_first() {
    let s = Server::start();
    let key = s.account("pages@example.com", 100);
    let c = s.client();
    let mut ids = Vec::new();
    for i in 0..25 {
        let r = c
            .create(
                &key,
                json!({"model": "runbase/echo", "input": {"text": format!("n{i}")}}),
            )
            .await;
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    ids.reverse();
    let page1 = c.get(Some(&key), "/api/v1/runs").await;
    assert_eq!(page1.status, 200);
    let got: Vec<&str> = page1.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[..20].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(page1.body["hasMore"], true);
    let page2 = c
        .get(
            Some(&key),
            &format!("/api/v1/runs?limit=20&startingAfter={}", ids[19]),
        )
        .await;
    let got: Vec<&str> = page2.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        got,
        ids[20..].iter().map(String::as_str).collect::<Vec<_>>()
    );
    assert_eq!(page2.body["hasMore"], false);
    // The cursor's snake_case spelling is still read.
    let old = c
        .get(
            Some(&key),
            &format!("/api/v1/runs?limit=20&starting_after={}", ids[19]),
        )
        .await;
    assert_eq!(old.body["data"], page2.body["data"]);
    let small = c.get(Some(&key), "/api/v1/runs?limit=1").await;
    assert_eq!(small.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(small.body["hasMore"], true);
    let max = c.get(Some(&key), "/api/v1/runs?limit=100").await;
    assert_eq!(max.body["data"].as_array().unwrap().len(), 25);
    c.get(Some(&key), "/api/v1/runs?starting_after=run_unknown")
        .await
        .assert_error(404, "run_not_found");
    // An empty cursor is none: the first page.
    for empty in ["startingAfter=", "starting_after="] {
        let first = c
            .get(Some(&key), &format!("/api/v1/runs?limit=1&{empty}"))
            .await;
        assert_eq!(first.status, 200, "{}", first.body);
        assert_eq!(first.body["data"], small.body["data"]);
    }
}

#[tokio::test]
async fn models_are_listed_with_schemas_and_prices() {
    let s = Server::start();
    let c = s.client();
    let list = c.get(None, "/api/v1/models").await;
    assert_eq!(list.status, 200);
    let ids: Vec<&str> = list.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(
        ids.contains(&"runbase/echo") && ids.contains(&"runbase/placeholder-image"),
        "{ids:?}"
    );
    let m = c
        .get(None, "/api/v1/models/runbase/placeholder-image")
        .await;
    assert_eq!(m.status, 200);
    for field in [
        "id",
        "name",
        "description",
        "tags",
        "inputSchema",
        "outputSchema",
        "price",
    ] {
        assert!(!m.body[field].is_null(), "{field} missing: {}", m.body);
    }
    assert_eq!(m.body["tags"], json!(["Text to image"]));
    assert_eq!(
        m.body["price"],
        json!({"baseUsd": 20_000, "byFields": null, "byValueUsd": null, "perField": null})
    );
    assert_eq!(m.body["inputSchema"]["required"], json!(["prompt"]));
    // The index filters by tag, case-insensitively; an unknown parameter is refused.
    let videos = c.get(None, "/api/v1/models?tag=text%20to%20VIDEO").await;
    assert_eq!(videos.status, 200);
    let videos = videos.body["data"].as_array().unwrap().clone();
    assert!(!videos.is_empty());
    assert!(videos.iter().all(|m| {
        m["tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t.as_str().unwrap().eq_ignore_ascii_case("text to video"))
    }));
    assert!(
        !videos
            .iter()
            .any(|m| m["id"] == "runbase/placeholder-image")
    );
    let all = c.get(None, "/api/v1/models?tag=").await;
    assert_eq!(all.body, list.body, "an empty tag filters nothing");
    c.get(None, "/api/v1/models?category=x")
        .await
        .assert_error(400, "invalid_request");
    let health = c.get(None, "/health").await;
    assert_eq!(health.status, 200);
}

#[tokio::test]
async fn account_endpoint_shows_balance_and_key_state() {
    let s = Server::start();
    let key = s.account("acct@example.com", 42);
    let c = s.client();
    let r = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["balanceUsd"], 420_000);
    assert_eq!(r.body["email"], "acct@example.com");
    assert_eq!(r.body["key"]["spentUsd"], 0);
    assert_eq!(r.body["key"]["spendLimitUsd"], Value::Null);
    assert_eq!(r.body["key"]["quotaUsed"], 0);
    assert!(r.body["key"]["rateLimit"]["limit"].is_u64(), "{}", r.body);
    assert_eq!(r.body["key"]["status"], "active");
}

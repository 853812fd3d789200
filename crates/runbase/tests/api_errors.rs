//! Every error code of the reference, with its status and envelope, and the check order of
//! `POST /api/v1/runs`.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::json;

#[tokio::test]
async fn authentication_errors() {
    let s = Server::start();
    let key = s.account("auth@example.com", 10);
    let c = s.client();
    let body = json!({"model": "runbase/echo", "input": {"text": "hi"}}).to_string();

    c.post_raw(None, "/api/v1/runs", &body)
        .await
        .assert_error(401, "missing_api_key");
    for header in [
        "Basic abc",
        "Bearer",
        "Bearer abc",
        "sk-abc",
        "Token sk-abc",
    ] {
        let r = c
            .send(
                c.http
                    .post(format!("{}/api/v1/runs", c.base))
                    .header("authorization", header)
                    .body(body.clone()),
            )
            .await;
        r.assert_error(401, "missing_api_key");
    }
    c.post_raw(Some("sk-not-a-real-key"), "/api/v1/runs", &body)
        .await
        .assert_error(401, "invalid_api_key");
    // A key that differs from a real one in its last character.
    let mut near = key.clone();
    let last = near.pop().unwrap();
    near.push(if last == 'a' { 'b' } else { 'a' });
    c.post_raw(Some(&near), "/api/v1/runs", &body)
        .await
        .assert_error(401, "invalid_api_key");
    // GET routes authenticate the same way.
    c.get(None, "/api/v1/runs/run_x")
        .await
        .assert_error(401, "missing_api_key");
    c.get(Some("sk-nope"), "/api/v1/runs/run_x")
        .await
        .assert_error(401, "invalid_api_key");
    c.get(None, "/api/v1/runs")
        .await
        .assert_error(401, "missing_api_key");
    c.get(None, "/api/v1/account")
        .await
        .assert_error(401, "missing_api_key");
}

#[tokio::test]
async fn request_body_errors_in_order() {
    let s = Server::start();
    let key = s.account("body@example.com", 10);
    let c = s.client();
    let post = |b: &'static str| {
        let (c, key) = (c.clone(), key.clone());
        async move { c.post_raw(Some(&key), "/api/v1/runs", b).await }
    };
    post("{not json").await.assert_error(400, "invalid_json");
    post("").await.assert_error(400, "invalid_json");
    post("[1,2]").await.assert_error(400, "invalid_json");
    post(r#"{"input": {}}"#)
        .await
        .assert_error(400, "missing_model");
    post(r#"{"model": 5, "input": {}}"#)
        .await
        .assert_error(400, "missing_model");
    // missing_model comes before missing_input.
    post(r#"{}"#).await.assert_error(400, "missing_model");
    post(r#"{"model": "runbase/echo"}"#)
        .await
        .assert_error(400, "missing_input");
    post(r#"{"model": "runbase/echo", "input": "hi"}"#)
        .await
        .assert_error(400, "missing_input");
    // missing_input comes before model_not_found.
    post(r#"{"model": "nobody/nothing"}"#)
        .await
        .assert_error(400, "missing_input");
    post(r#"{"model": "nobody/nothing", "input": {}}"#)
        .await
        .assert_error(400, "model_not_found");
    // model_not_found comes before invalid_input.
    post(r#"{"model": "nobody/nothing", "input": {"bad": true}}"#)
        .await
        .assert_error(400, "model_not_found");

    let r = post(r#"{"model": "runbase/echo", "input": {}}"#).await;
    r.assert_error(400, "invalid_input");
    assert_eq!(r.body["error"]["message"], "input.text: is required");
    let r = post(r#"{"model": "runbase/placeholder-image", "input": {"prompt": "x", "aspect_ratio": "5:7"}}"#).await;
    r.assert_error(400, "invalid_input");
    assert_eq!(
        r.body["error"]["message"],
        "input.aspect_ratio: must be one of 1:1, 2:3, 3:2, 3:4, 4:3, 9:16, 16:9, 21:9"
    );
    let r = post(r#"{"model": "runbase/echo", "input": {"text": "x", "delay_ms": 60001}}"#).await;
    r.assert_error(400, "invalid_input");
    assert_eq!(
        r.body["error"]["message"],
        "input.delay_ms: must be at most 60000"
    );
    let r = post(r#"{"model": "runbase/echo", "input": {"text": "x", "delay_ms": "soon"}}"#).await;
    assert_eq!(
        r.body["error"]["message"],
        "input.delay_ms: must be an integer"
    );
}

#[tokio::test]
async fn auth_comes_before_body_checks() {
    let s = Server::start();
    let c = s.client();
    c.post_raw(None, "/api/v1/runs", "{not json")
        .await
        .assert_error(401, "missing_api_key");
    c.post_raw(Some("sk-unknown"), "/api/v1/runs", "{not json")
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn insufficient_balance_and_nothing_charged() {
    let s = Server::start();
    let key = s.account("poor@example.com", 0);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "hi"}}),
        )
        .await;
    r.assert_error(402, "insufficient_balance");
    // invalid_input is checked before the balance.
    c.create(&key, json!({"model": "runbase/echo", "input": {}}))
        .await
        .assert_error(400, "invalid_input");
    assert_eq!(c.balance(&key).await, json!(0));
    let runs = c.get(Some(&key), "/api/v1/runs").await;
    assert_eq!(runs.body["data"], json!([]));
    // With 1 cent, a 2-cent image is still refused while a 1-cent echo goes through.
    s.cli(&[
        "credits",
        "add",
        "--account",
        "poor@example.com",
        "--cents",
        "1",
    ]);
    c.create(
        &key,
        json!({"model": "runbase/placeholder-image", "input": {"prompt": "x"}}),
    )
    .await
    .assert_error(402, "insufficient_balance");
    assert_eq!(
        c.create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "hi"}})
        )
        .await
        .status,
        201
    );
    assert_eq!(c.balance(&key).await, json!(0));
}

#[tokio::test]
async fn runs_of_other_accounts_are_not_found() {
    let s = Server::start();
    let alice = s.account("alice@example.com", 10);
    let bob = s.account("bob@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &alice,
            json!({"model": "runbase/echo", "input": {"text": "mine"}}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    assert_eq!(c.run(&alice, &id).await.status, 200);
    c.run(&bob, &id).await.assert_error(404, "run_not_found");
    c.run(&bob, "run_doesnotexist")
        .await
        .assert_error(404, "run_not_found");
    c.run(&bob, "anything")
        .await
        .assert_error(404, "run_not_found");
    let list = c.get(Some(&bob), "/api/v1/runs").await;
    assert_eq!(list.body["data"], json!([]));
    // Another key of the same account sees it.
    let alice2 = s.key("alice@example.com", &["--name", "second"]);
    assert_eq!(c.run(&alice2, &id).await.status, 200);
}

#[tokio::test]
async fn framework_errors_use_the_envelope() {
    let s = Server::start();
    let key = s.account("fw@example.com", 10);
    let c = s.client();
    c.get(None, "/nowhere").await.assert_error(404, "not_found");
    c.get(Some(&key), "/api/v1/nowhere")
        .await
        .assert_error(404, "not_found");
    let r = c
        .send(c.http.delete(format!("{}/api/v1/runs", c.base)))
        .await;
    r.assert_error(405, "method_not_allowed");
    let r = c
        .send(c.http.put(format!("{}/api/v1/runs/run_x", c.base)))
        .await;
    r.assert_error(405, "method_not_allowed");
    // A body over the limit.
    let big = format!(
        r#"{{"model":"runbase/echo","input":{{"text":"{}"}}}}"#,
        "x".repeat(2 << 20)
    );
    let r = c.post_raw(Some(&key), "/api/v1/runs", &big).await;
    r.assert_error(413, "payload_too_large");
    // Bad query parameters.
    c.get(Some(&key), "/api/v1/runs?limit=0")
        .await
        .assert_error(400, "invalid_request");
    c.get(Some(&key), "/api/v1/runs?limit=101")
        .await
        .assert_error(400, "invalid_request");
    c.get(Some(&key), "/api/v1/runs?limit=abc")
        .await
        .assert_error(400, "invalid_request");
    c.get(Some(&key), "/api/v1/models/nobody/nothing")
        .await
        .assert_error(404, "not_found");
    // Content type is not required to be JSON: curl -d sends form encoding by default.
    let r = c
        .send(
            c.http
                .post(format!("{}/api/v1/runs", c.base))
                .bearer_auth(&key)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(r#"{"model":"runbase/echo","input":{"text":"hi"}}"#),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

/// Bounds found by the review of the wire format: an input too large to store and list, a
/// prompt past its model's limit, reference images that are not absolute http(s) URLs. Each is
/// `invalid_input`, naming the field, and charges nothing.
#[tokio::test]
async fn oversized_inputs_and_bad_image_urls_are_invalid_input() {
    let s = Server::start();
    let key = s.account("bounds@example.com", 100);
    let c = s.client();
    let long = "x".repeat(9_000);
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "hi", "fail": "y".repeat(70_000)}}),
        )
        .await;
    r.assert_error(400, "invalid_input");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("65536"),
        "{}",
        r.body
    );
    let r = c
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": long}}),
        )
        .await;
    r.assert_error(400, "invalid_input");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("input.prompt: must be at most 1000"),
        "{}",
        r.body
    );
    s.account("bounds-test@example.com", 0);
    let test_key = s.key("bounds-test@example.com", &["--test"]);
    for bad in [
        "",
        "missing",
        "https:example.com/a.png",
        "file:///etc/passwd",
        "/files/a.png",
    ] {
        let r = c
            .create(&test_key, json!({"model": "google/nano-banana-2", "input": {"prompt": "p", "image_urls": [bad]}}))
            .await;
        r.assert_error(400, "invalid_input");
        assert_eq!(
            r.body["error"]["message"],
            "input.image_urls[0]: must be an absolute http:// or https:// URL",
            "{bad:?}"
        );
    }
    assert_eq!(c.balance(&key).await, json!(100));
}

//! Test mode on a fresh install (no provider credentials): upstream models are listed but
//! unavailable to live keys, and test keys (`sk-test-...`) run any of them through the
//! simulator, free, with real placeholder files.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::Server;
use serde_json::{Value, json};

#[tokio::test]
async fn test_keys_run_any_catalogue_model_simulated_and_free() {
    let s = Server::start();
    let live = s.account("sim@example.com", 100);
    let test = s.key("sim@example.com", &["--test"]);
    assert!(test.starts_with("sk-test-"), "{test}");
    let c = s.client();

    // The models list says which models this install can run for live keys.
    let models = c.get(None, "/api/v1/models").await;
    let find = |id: &str| -> Value {
        models.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id} is listed"))
    };
    assert_eq!(find("google/nano-banana-2")["available"], false);
    assert_eq!(find("openai/gpt-image-2")["available"], false);
    assert_eq!(find("runbase/echo")["available"], true);

    // A live key cannot reach a model whose provider has no credentials...
    let body = json!({"model": "google/nano-banana-2", "input": {"prompt": "a lighthouse", "aspect_ratio": "16:9"}});
    c.create(&live, body.clone())
        .await
        .assert_error(400, "model_not_found");

    // ...a test key can: the documented example works on a fresh install.
    let r = c.create(&test, body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["costUsd"], 0);
    assert_eq!(r.body["input"]["resolution"], "1K", "defaults applied");
    let run = c.wait(&test, r.body["id"].as_str().unwrap()).await;
    assert_eq!(run["status"], "succeeded", "{run}");
    let url = run["output"]["urls"][0].as_str().unwrap();
    let png_bytes = c.download(url).await;
    let dec = png::Decoder::new(std::io::Cursor::new(png_bytes))
        .read_info()
        .unwrap();
    assert_eq!(
        (dec.info().width, dec.info().height),
        (512, 288),
        "a real PNG at the requested 16:9"
    );

    // The schema still applies in test mode.
    c.create(
        &test,
        json!({"model": "google/nano-banana-2", "input": {"aspect_ratio": "16:9"}}),
    )
    .await
    .assert_error(400, "invalid_input");

    // A video model gives an MP4, a language model text, an image model with `n` that many.
    let video = c
        .create(
            &test,
            json!({"model": "kwaivgi/kling-v1.6-pro", "input": {"prompt": "waves", "duration": "10"}}),
        )
        .await;
    assert_eq!(video.status, 201, "{}", video.body);
    let video = c.wait(&test, video.body["id"].as_str().unwrap()).await;
    assert_eq!(video["status"], "succeeded", "{video}");
    let mp4 = c
        .download(video["output"]["urls"][0].as_str().unwrap())
        .await;
    assert_eq!(&mp4[4..8], b"ftyp", "an MP4 file");

    let llm = c
        .create(
            &test,
            json!({"model": "meta/llama-3-8b-instruct", "input": {"prompt": "hi"}}),
        )
        .await;
    let llm = c.wait(&test, llm.body["id"].as_str().unwrap()).await;
    assert_eq!(llm["status"], "succeeded", "{llm}");
    assert!(
        llm["output"]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
    assert_eq!(llm["output"]["urls"], json!([]));

    // GPT Image 2 takes runbase.net's fields (no `n`): one image per run.
    let image = c
        .create(
            &test,
            json!({"model": "openai/gpt-image-2", "input": {"prompt": "dice", "aspect_ratio": "3:2", "resolution": "2K"}}),
        )
        .await;
    assert_eq!(image.status, 201, "{}", image.body);
    let image = c.wait(&test, image.body["id"].as_str().unwrap()).await;
    assert_eq!(image["status"], "succeeded", "{image}");
    assert_eq!(
        image["output"]["urls"].as_array().unwrap().len(),
        1,
        "{image}"
    );

    // Nothing was charged: the balance is what was added, and the ledger has only the top-up.
    assert_eq!(c.balance(&live).await, 100);
    let out = s.cli(&["credits", "show", "--account", "sim@example.com", "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["ledger"].as_array().unwrap().len(), 1, "{v}");
}

/// A key sees the runs of its own mode only: a test key (often handed to CI) never reads, lists,
/// watches or cancels the account's live runs, and a live key never sees test runs. Each is
/// `run_not_found`, as another account's run is.
#[tokio::test]
async fn a_key_sees_only_the_runs_of_its_own_mode() {
    let s = Server::start();
    let live = s.account("modes@example.com", 100);
    let test = s.key("modes@example.com", &["--test"]);
    let c = s.client();
    // A live run that stays processing (a test key's is simulated at once).
    let slow = json!({"model": "runbase/echo", "input": {"text": "hi", "delay_ms": 20000}});
    let mut ids = Vec::new();
    for key in [&live, &test] {
        let r = c.create(key, slow.clone()).await;
        assert_eq!(r.status, 201, "{}", r.body);
        ids.push(r.body["id"].as_str().unwrap().to_owned());
    }
    let (live_run, test_run) = (ids[0].clone(), ids[1].clone());
    c.wait_for_status(&live, &live_run, "processing").await;
    assert_eq!(c.wait(&test, &test_run).await["status"], "succeeded");
    for (key, own, other) in [(&live, &live_run, &test_run), (&test, &test_run, &live_run)] {
        assert_eq!(c.run(key, own).await.status, 200);
        c.run(key, other).await.assert_error(404, "run_not_found");
        for path in ["events", "deliveries"] {
            c.get(Some(key), &format!("/api/v1/runs/{other}/{path}"))
                .await
                .assert_error(404, "run_not_found");
        }
        c.post_raw(Some(key), &format!("/api/v1/runs/{other}/cancel"), "")
            .await
            .assert_error(404, "run_not_found");
        let listed = c.get(Some(key), "/api/v1/runs").await;
        assert_eq!(listed.status, 200, "{}", listed.body);
        let listed: Vec<&str> = listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap())
            .collect();
        assert_eq!(listed, vec![own.as_str()]);
        for cursor in ["startingAfter", "starting_after"] {
            c.get(Some(key), &format!("/api/v1/runs?{cursor}={other}"))
                .await
                .assert_error(404, "run_not_found");
        }
        let page = c
            .get(Some(key), &format!("/api/v1/runs?startingAfter={own}"))
            .await;
        assert_eq!(page.body["data"], json!([]), "{}", page.body);
    }
    // The test key's refused cancel did not stop the live run; the live key cancels it.
    assert_eq!(c.run(&live, &live_run).await.body["status"], "processing");
    let canceled = c
        .post_raw(Some(&live), &format!("/api/v1/runs/{live_run}/cancel"), "")
        .await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["status"], "canceled");
    assert_eq!(c.balance(&live).await, json!(100), "the live run refunded");
    assert_eq!(c.run(&test, &test_run).await.body["status"], "succeeded");
}

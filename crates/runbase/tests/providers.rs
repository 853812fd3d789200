//! The provider contract suite: the same scenarios against every adapter (Replicate, fal,
//! OpenAI images and chat, Gemini, Cog), each talking to a local double of its API over a real
//! socket (`doubles/`). Every terminal failure must end as a `failed` run with a clear error
//! and a full refund; the ledger must match the balance at the end.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
mod doubles;

use common::{Client, Server};
use doubles::Double;
use serde_json::{Value, json};
use std::sync::atomic::Ordering;
use std::time::Duration;

const PRICE: f64 = 5.0;
const START: f64 = 1000.0;

fn model(id: &str, provider: &str, upstream: &str, category: &str, extra: &str) -> String {
    format!(
        r#"
[[model]]
id = "{id}"
name = "{id}"
category = "{category}"
provider = "{provider}"
upstream = "{upstream}"
timeout_secs = 3
price = {{ cents = {PRICE} }}
input_schema = {{ type = "object", required = ["prompt"], properties = {{ prompt = {{ type = "string" }}, n = {{ type = "integer", minimum = 1, maximum = 4 }}, image_urls = {{ type = "array", items = {{ type = "string" }} }} }}, additionalProperties = false }}
output_schema = {{ type = "object", properties = {{ urls = {{ type = "array" }}, text = {{ type = "string" }} }} }}
{extra}
"#
    )
}

struct Setup {
    server: Server,
    key: String,
    replicate: Double,
    fal: Double,
    openai: Double,
    gemini: Double,
    cog: Double,
    _dir: tempfile::TempDir,
}

async fn setup() -> Setup {
    let (replicate, fal, openai, gemini, cog) = (
        doubles::replicate().await,
        doubles::fal().await,
        doubles::openai().await,
        doubles::gemini().await,
        doubles::cog().await,
    );
    let mut catalog = String::new();
    catalog += &model(
        "test/replicate",
        "replicate",
        "acme/image",
        "text to image",
        "",
    );
    catalog += &model(
        "test/replicate-text",
        "replicate",
        "acme/llm",
        "text generation",
        "",
    );
    catalog += &model(
        "test/fal",
        "fal",
        "fal-ai/image/sub/path",
        "text to image",
        "",
    );
    catalog += &model(
        "test/openai-image",
        "openai",
        "gpt-image-test",
        "text to image",
        "options = { endpoint = \"images\" }",
    );
    catalog += &model(
        "test/openai-chat",
        "openai",
        "gpt-chat-test",
        "text generation",
        "",
    );
    catalog += &model(
        "test/gemini",
        "gemini",
        "gemini-3.1-flash-image",
        "text to image",
        "",
    );
    catalog += &model(
        "test/cog",
        "cog",
        "unused",
        "text to image",
        // The double takes any number of predictions at once.
        &format!("options = {{ url = \"{}\", concurrency = 16 }}", cog.url),
    );
    // The first route's server refuses connections; the run falls back to fal.
    catalog += &model(
        "test/fallback",
        "deadhost",
        "whatever",
        "text to image",
        "fallback = [{ provider = \"fal\", upstream = \"fal-ai/image\" }]",
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.toml");
    std::fs::write(&file, catalog).unwrap();
    let list = format!("[\"{}\"]", file.display());
    let openai_base = format!("{}/v1", openai.url);
    let gemini_base = format!("{}/v1beta", gemini.url);
    let server = Server::start_with(&[
        ("RUNBASE_CATALOG", list.as_str()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
        ("RUNBASE_PROVIDERS__REPLICATE__API_KEY", "r8_test_token"),
        (
            "RUNBASE_PROVIDERS__REPLICATE__BASE_URL",
            replicate.url.as_str(),
        ),
        ("FAL_KEY", "fal-test-key"),
        ("RUNBASE_PROVIDERS__FAL__BASE_URL", fal.url.as_str()),
        ("OPENAI_API_KEY", "sk-openai-test"),
        ("RUNBASE_PROVIDERS__OPENAI__BASE_URL", openai_base.as_str()),
        ("GEMINI_API_KEY", "gemini-test-key"),
        ("RUNBASE_PROVIDERS__GEMINI__BASE_URL", gemini_base.as_str()),
        (
            "RUNBASE_PROVIDERS__OPENAI_COMPATIBLE__DEADHOST__BASE_URL",
            "http://127.0.0.1:9/v1",
        ),
        ("RUNBASE_PROVIDERS__RETRY__MAX_RETRIES", "2"),
        ("RUNBASE_PROVIDERS__RETRY__BASE_BACKOFF_MS", "10"),
        ("RUNBASE_PROVIDERS__RETRY__MAX_BACKOFF_MS", "200"),
        ("RUNBASE_PROVIDERS__POLL_INTERVAL_MS", "20"),
    ]);
    let key = server.account("providers@example.com", START as i64);
    Setup {
        server,
        key,
        replicate,
        fal,
        openai,
        gemini,
        cog,
        _dir: dir,
    }
}

async fn start(c: &Client, key: &str, model: &str, prompt: &str) -> String {
    let r = c
        .create(key, json!({"model": model, "input": {"prompt": prompt}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    r.body["id"].as_str().unwrap().to_owned()
}

async fn run_to_end(c: &Client, key: &str, model: &str, prompt: &str) -> Value {
    let id = start(c, key, model, prompt).await;
    c.wait(key, &id).await
}

#[track_caller]
fn assert_failed(run: &Value, codes: &[&str]) {
    assert_eq!(run["status"], "failed", "{run}");
    let code = run["error"]["code"].as_str().unwrap_or_default();
    assert!(
        codes.contains(&code),
        "error code {code:?} not in {codes:?}: {run}"
    );
    let message = run["error"]["message"].as_str().unwrap_or_default();
    assert!(!message.is_empty(), "{run}");
    for secret in [
        "r8_test_token",
        "fal-test-key",
        "sk-openai-test",
        "gemini-test-key",
    ] {
        assert!(
            !message.contains(secret),
            "a credential leaked into the error: {run}"
        );
    }
}

/// What an adapter can do, for the parts of the contract that depend on it.
struct Caps {
    /// The provider names jobs, so a timed-out or canceled run is canceled upstream.
    cancels_upstream: bool,
    /// Codes a model failure may end with.
    broken_codes: &'static [&'static str],
}

/// The contract: success with files served by Runbase, 429 then success, persistent 5xx,
/// garbage, a model failure, a timeout and a cancel; then the books.
async fn contract(s: &Setup, model: &str, double: &Double, caps: Caps) {
    let c = s.server.client();
    let key = &s.key;
    let before = c.balance(key).await.as_f64().unwrap();

    let (ok, flaky, down, garbage, broken, slow, canceled) = tokio::join!(
        run_to_end(&c, key, model, "ok:1"),
        run_to_end(&c, key, model, "flaky:1"),
        run_to_end(&c, key, model, "down:1"),
        run_to_end(&c, key, model, "garbage:1"),
        run_to_end(&c, key, model, "broken:1"),
        run_to_end(&c, key, model, "slow:timeout"),
        async {
            let id = start(&c, key, model, "slow:cancel").await;
            c.wait_for_status(key, &id, "processing").await;
            // Give the adapter time to have its job id, as a real client would have.
            tokio::time::sleep(Duration::from_millis(300)).await;
            let r = c
                .post_raw(Some(key), &format!("/api/v1/runs/{id}/cancel"), "")
                .await;
            assert_eq!(r.status, 200, "{}", r.body);
            assert_eq!(r.body["status"], "canceled", "{}", r.body);
            c.wait(key, &id).await
        },
    );

    // Success: the file is copied into Runbase and served from there.
    assert_eq!(ok["status"], "succeeded", "{ok}");
    assert_eq!(ok["costUsd"], (PRICE * 10_000.0) as i64);
    let urls = ok["output"]["urls"].as_array().unwrap();
    assert_eq!(urls.len(), 1, "{ok}");
    let url = urls[0].as_str().unwrap();
    assert!(url.starts_with(&s.server.url), "served by Runbase: {url}");
    assert_eq!(
        c.download(url).await,
        doubles::png(),
        "the provider's image"
    );

    // 429, then success after the pause the provider asked for.
    assert_eq!(flaky["status"], "succeeded", "{flaky}");
    assert_eq!(double.seen.submits_for("flaky:1"), 2);

    // Persistent 5xx: retried, then failed and refunded.
    assert_failed(&down, &["upstream_error", "upstream_unavailable"]);
    assert_eq!(
        double.seen.submits_for("down:1"),
        3,
        "one try and two retries"
    );

    assert_failed(&garbage, &["upstream_bad_response"]);
    assert_failed(&broken, caps.broken_codes);
    assert_eq!(
        double.seen.submits_for("broken:1"),
        1,
        "a model failure is not retried"
    );

    assert_failed(&slow, &["timeout"]);
    assert_eq!(canceled["status"], "canceled", "{canceled}");
    if caps.cancels_upstream {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while double.seen.cancels() < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "the timed-out and the canceled job are both canceled upstream (saw {})",
                double.seen.cancels()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // Only the two successes are paid for.
    let after = c.balance(key).await.as_f64().unwrap();
    assert_eq!(
        before - after,
        2.0 * PRICE,
        "only the successes are charged"
    );
}

fn ledger_matches_balance(s: &Setup) {
    let out = s.server.cli(&[
        "credits",
        "show",
        "--account",
        "providers@example.com",
        "--json",
        "--limit",
        "100000",
    ]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let sum: i64 = v["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amountUsd"].as_i64().unwrap())
        .sum();
    assert_eq!(
        sum,
        v["balanceUsd"].as_i64().unwrap(),
        "ledger sum vs balance"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_adapter_keeps_the_contract() {
    let s = setup().await;
    contract(
        &s,
        "test/replicate",
        &s.replicate,
        Caps {
            cancels_upstream: true,
            broken_codes: &["model_error"],
        },
    )
    .await;
    contract(
        &s,
        "test/fal",
        &s.fal,
        Caps {
            cancels_upstream: true,
            broken_codes: &["model_error"],
        },
    )
    .await;
    contract(
        &s,
        "test/openai-image",
        &s.openai,
        Caps {
            cancels_upstream: false,
            broken_codes: &["upstream_rejected"],
        },
    )
    .await;
    contract(
        &s,
        "test/gemini",
        &s.gemini,
        Caps {
            cancels_upstream: false,
            broken_codes: &["content_blocked"],
        },
    )
    .await;
    contract(
        &s,
        "test/cog",
        &s.cog,
        Caps {
            cancels_upstream: true,
            broken_codes: &["model_error"],
        },
    )
    .await;
    ledger_matches_balance(&s);

    // Credentials went with every request, in each provider's own header format.
    let auth = |d: &Double| d.seen.auth.lock().unwrap().clone();
    for (d, want) in [
        (&s.replicate, "Bearer r8_test_token"),
        (&s.fal, "Key fal-test-key"),
        (&s.openai, "Bearer sk-openai-test"),
        (&s.gemini, "gemini-test-key"),
    ] {
        let seen = auth(d);
        assert_eq!(
            seen.len(),
            d.seen.submits.load(Ordering::SeqCst),
            "every submission carried a credential"
        );
        assert!(seen.iter().all(|a| a == want), "{seen:?}");
    }
    let log = s.server.log();
    for secret in [
        "r8_test_token",
        "fal-test-key",
        "sk-openai-test",
        "gemini-test-key",
    ] {
        assert!(!log.contains(secret), "a credential was logged");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_models_answer_in_output_text() {
    let s = setup().await;
    let c = s.server.client();
    let chat = run_to_end(&c, &s.key, "test/openai-chat", "ok:hello").await;
    assert_eq!(chat["status"], "succeeded", "{chat}");
    assert_eq!(chat["output"]["text"], "You said: ok:hello");
    assert_eq!(chat["output"]["urls"], json!([]));
    let sent = s.openai.seen.bodies.lock().unwrap()["ok:hello"].clone();
    assert_eq!(sent["model"], "gpt-chat-test");
    assert_eq!(sent["messages"][0]["role"], "user");

    // A language model on Replicate streams tokens; Runbase joins them.
    let llm = run_to_end(&c, &s.key, "test/replicate-text", "text:hi").await;
    assert_eq!(llm["status"], "succeeded", "{llm}");
    assert_eq!(llm["output"]["text"], "Hello there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_that_cannot_be_reached_falls_back_to_the_next() {
    let s = setup().await;
    let c = s.server.client();
    let run = run_to_end(&c, &s.key, "test/fallback", "ok:fallback").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(s.fal.seen.submits_for("ok:fallback"), 1);
    assert_eq!(
        c.download(run["output"]["urls"][0].as_str().unwrap()).await,
        doubles::png()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gemini_request_carries_the_image_options() {
    let s = setup().await;
    let c = s.server.client();
    let run = run_to_end(&c, &s.key, "test/gemini", "ok:options").await;
    assert_eq!(run["status"], "succeeded", "{run}");
    assert_eq!(run["output"]["text"], "Here is your image.");
    let sent = s.gemini.seen.bodies.lock().unwrap()["ok:options"].clone();
    assert_eq!(
        sent["generationConfig"]["responseModalities"],
        json!(["TEXT", "IMAGE"])
    );
    assert_eq!(s.gemini.seen.submits.load(Ordering::SeqCst), 1);

    // Reference images are fetched by the server: one pointing into the server's own network
    // is refused (and the run refunded), and Gemini never sees the request.
    let before = c.balance(&s.key).await;
    let r = c
        .create(
            &s.key,
            json!({"model": "test/gemini", "input": {"prompt": "ok:ssrf", "image_urls": ["http://169.254.169.254/latest/meta-data"]}}),
        )
        .await;
    let run = c.wait(&s.key, r.body["id"].as_str().unwrap()).await;
    assert_failed(&run, &["invalid_input"]);
    assert!(
        run["error"]["message"]
            .as_str()
            .unwrap()
            .contains("not on the public internet"),
        "{run}"
    );
    assert_eq!(s.gemini.seen.submits_for("ok:ssrf"), 0);
    assert_eq!(c.balance(&s.key).await, before);
}

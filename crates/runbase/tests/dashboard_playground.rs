//! The Playground and the model pages over real HTTP, as the page's script (and a browser
//! without script) uses them: runs charged and listed like API runs, test mode free, the price
//! preview equal to what the API charges, sessions and CSRF required, other accounts' runs
//! invisible; the `/{provider}/{name}` address; and the dashboard's languages.

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use common::Server;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

/// A cookie-keeping client that does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

#[derive(Debug)]
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|_| panic!("not JSON ({}): {}", self.status, self.text))
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn csrf(&self) -> String {
        let marker = r#"name="csrf_token" value=""#;
        let at = self
            .text
            .find(marker)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.text));
        let rest = &self.text[at + marker.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    #[track_caller]
    fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{}", self.text);
        assert_eq!(self.json()["error"]["code"], code, "{}", self.text);
    }
}

impl Browser {
    fn new(server: &Server) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            base: server.url.clone(),
            cookies: BTreeMap::new(),
        }
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            let c = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            req.header("cookie", c)
        };
        let r = req.send().await.unwrap();
        let page = Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        };
        for c in page.headers.get_all("set-cookie") {
            let c = c.to_str().unwrap();
            let (k, v) = c.split(';').next().unwrap().split_once('=').unwrap();
            if v.is_empty() || c.contains("Max-Age=0") {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_owned(), v.to_owned());
            }
        }
        page
    }

    async fn get(&mut self, path: &str) -> Page {
        let req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "text/html");
        self.send(req).await
    }

    async fn get_with(&mut self, path: &str, headers: &[(&str, &str)]) -> Page {
        let mut req = self.http.get(format!("{}{path}", self.base));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        self.send(req).await
    }

    /// Posts a form as the page's script does (`Accept: application/json`).
    async fn post_json(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("accept", "application/json")
            .form(form);
        self.send(req).await
    }

    async fn post_html(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("accept", "text/html")
            .form(form);
        self.send(req).await
    }

    /// Makes an account (with `cents` of credit) with the CLI and logs in with the form.
    async fn log_in_new(&mut self, server: &Server, email: &str, cents: i64) {
        server.cli_with_stdin(
            &["accounts", "create", email, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        if cents > 0 {
            server.cli(&[
                "credits",
                "add",
                "--account",
                email,
                "--cents",
                &cents.to_string(),
            ]);
        }
        let token = self.get("/login").await.csrf();
        let p = self
            .post_html(
                "/login",
                &[
                    ("email", email),
                    ("password", PASSWORD),
                    ("csrf_token", &token),
                ],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.text);
    }

    /// Runs the Playground's form of `model` with `fields`; returns the answer.
    async fn run(&mut self, model: &str, fields: &[(&str, &str)]) -> Page {
        let token = self.get(&format!("/models/{model}")).await.csrf();
        let mut form = vec![("model", model), ("csrf_token", token.as_str())];
        form.extend_from_slice(fields);
        self.post_json("/playground/runs", &form).await
    }

    /// Polls the Playground's status route until the run is finished.
    async fn wait(&mut self, id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let p = self
                .get_with(
                    &format!("/playground/runs/{id}"),
                    &[("accept", "application/json")],
                )
                .await;
            assert_eq!(p.status, 200, "{}", p.text);
            let run = p.json();
            if ["succeeded", "failed", "canceled"].contains(&run["status"].as_str().unwrap()) {
                return run;
            }
            assert!(Instant::now() < deadline, "run {id} did not finish: {run}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn server() -> Server {
    let mut env = common::relaxed();
    env.push(("RUNBASE_RATE_LIMITS__AUTH__REQUESTS", "100"));
    Server::start_with(&env)
}

fn ledger_kinds(server: &Server, email: &str) -> Vec<String> {
    let out = server.cli(&["credits", "show", "--account", email, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn a_playground_run_is_charged_listed_and_priced_like_an_api_run() {
    let s = server();
    let mut b = Browser::new(&s);
    b.log_in_new(&s, "pg@example.com", 100).await;
    let model = "runbase/placeholder-image";
    let fields = [
        ("input.prompt", "a lighthouse at dusk"),
        ("input.aspect_ratio", "16:9"),
    ];

    // The page has the form, generated from the schema, with the price shown.
    let page = b.get(&format!("/models/{model}")).await;
    assert_eq!(page.status, 200);
    for part in [
        r#"id="pg-form""#,
        r#"name="input.prompt""#,
        r#"<option value="16:9""#,
        "$0.02 per run",
        r#"id="pg-run""#,
        r#"id="pg-curl""#,
    ] {
        assert!(page.text.contains(part), "{part} in {}", page.text);
    }

    // The price preview: what the API charges, the input and the curl that sends it.
    let mut form = vec![("model", model)];
    form.extend_from_slice(&fields);
    let price = b.post_json("/playground/price", &form).await;
    assert_eq!(price.status, 200, "{}", price.text);
    let price = price.json();
    assert_eq!(price["costUsd"], 20000, "{price}");
    assert_eq!(price["chargedUsd"], 20000);
    assert_eq!(price["input"]["aspect_ratio"], "16:9");
    assert!(price["problem"].is_null(), "{price}");
    let curl = price["curl"].as_str().unwrap();
    assert!(
        curl.contains("\"Authorization: Bearer $RUNBASE_API_KEY\""),
        "{curl}"
    );
    assert!(curl.contains(r#"{"input":{"aspect_ratio":"16:9","prompt":"a lighthouse at dusk"},"model":"runbase/placeholder-image"}"#), "{curl}");

    // The API charges the same for the same request.
    let key = s.key("pg@example.com", &[]);
    let c = s.client();
    let api = c
        .create(
            &key,
            serde_json::json!({"model": model, "input": price["input"]}),
        )
        .await;
    assert_eq!(api.status, 201, "{}", api.body);
    assert_eq!(api.body["costUsd"], price["costUsd"]);
    c.wait(&key, api.body["id"].as_str().unwrap()).await;

    // Run it: charged to the balance, finished with an inline image.
    let run = b.run(model, &fields).await;
    assert_eq!(run.status, 201, "{}", run.text);
    let run = run.json();
    assert_eq!(run["costUsd"], 20000);
    let id = run["id"].as_str().unwrap().to_owned();
    let done = b.wait(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let file = &done["files"][0];
    assert_eq!(file["kind"], "image", "{done}");
    let href = file["href"].as_str().unwrap();
    assert!(href.starts_with(&format!("/files/{id}/")), "{href}");
    assert_eq!(
        c.download(&format!("{}{href}", s.url)).await[..4],
        b"\x89PNG"[..]
    );

    // The books: two charges of 2¢ (the API's and the Playground's), balance 96¢.
    assert_eq!(c.balance(&key).await, 96);
    let kinds = ledger_kinds(&s, "pg@example.com");
    assert_eq!(
        kinds.iter().filter(|k| *k == "run_charge").count(),
        2,
        "{kinds:?}"
    );

    // Listed with the account's runs (API and pages), and beside the form.
    let listed = c.get(Some(&key), "/api/v1/runs").await;
    assert!(
        listed.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == id.as_str())
    );
    assert!(b.get("/runs").await.text.contains(&id));
    let page = b.get(&format!("/models/{model}")).await;
    let recent = &page.text[page.text.find(r#"id="pg-recent""#).unwrap()..];
    assert!(recent.contains(&id), "{recent}");
    assert!(
        !recent.contains(api.body["id"].as_str().unwrap()),
        "the API's run is not a playground run"
    );
    // Made with the account's playground key, shown with its spend on the keys page.
    let keys = b.get("/settings/api-keys").await;
    assert!(keys.text.contains("Playground"), "{}", keys.text);
    assert!(keys.text.contains("$0.02"), "{}", keys.text);

    // A browser without script posts the form and lands on the run's page.
    let token = b.get(&format!("/models/{model}")).await.csrf();
    let mut form = vec![("model", model), ("csrf_token", token.as_str())];
    form.extend_from_slice(&fields);
    let posted = b.post_html("/playground/runs", &form).await;
    assert_eq!(posted.status, 303, "{}", posted.text);
    assert!(
        posted.header("location").starts_with("/runs/run_"),
        "{posted:?}"
    );
    assert_eq!(c.balance(&key).await, 94);

    // Bad input is refused with the API's envelope and nothing is charged.
    b.run(
        model,
        &[("input.prompt", "x"), ("input.aspect_ratio", "7:5")],
    )
    .await
    .assert_error(400, "invalid_input");
    b.run(model, &[("input.nope", "x")])
        .await
        .assert_error(400, "invalid_input");
    assert_eq!(c.balance(&key).await, 94);
}

#[tokio::test]
async fn test_mode_is_free_and_simulated_and_live_needs_credit() {
    let s = server();
    let mut b = Browser::new(&s);
    b.log_in_new(&s, "free@example.com", 0).await;

    // A model without a provider here: live runs are refused, test mode runs it for free.
    let nb = "google/nano-banana-2";
    let page = b.get(&format!("/models/{nb}")).await;
    assert!(page.text.contains(r#"id="pg-test""#), "{}", page.text);
    assert!(
        page.text.contains("checked"),
        "test mode is on by default for it"
    );
    b.run(nb, &[("input.prompt", "a fox")])
        .await
        .assert_error(400, "model_not_found");
    let run = b
        .run(
            nb,
            &[
                ("input.prompt", "a fox"),
                ("input.aspect_ratio", "16:9"),
                ("input.resolution", "2K"),
                ("test", "1"),
            ],
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.text);
    assert_eq!(run.json()["costUsd"], 0);
    let done = b.wait(run.json()["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["files"][0]["kind"], "image");

    // The preview still shows the price of the options (and that test mode is free).
    let price = b
        .post_json(
            "/playground/price",
            &[("model", nb), ("input.resolution", "2K"), ("test", "1")],
        )
        .await
        .json();
    assert_eq!(price["costUsd"], 90000, "{price}");
    assert_eq!(price["chargedUsd"], 0);
    assert!(
        price["problem"].as_str().unwrap().contains("prompt"),
        "{price}"
    );
    // ...equal to the API's published price for that option, and per second for video.
    let c = s.client();
    let api = c.get(None, &format!("/api/v1/models/{nb}")).await.body;
    assert_eq!(api["price"]["byValueUsd"]["2K"], price["costUsd"]);
    let kling = b
        .post_json(
            "/playground/price",
            &[
                ("model", "kling/kling-3.0"),
                ("input.mode", "pro"),
                ("input.duration", "10"),
            ],
        )
        .await
        .json();
    let api = c.get(None, "/api/v1/models/kling/kling-3.0").await.body;
    assert_eq!(
        kling["costUsd"].as_i64().unwrap(),
        api["price"]["byValueUsd"]["pro"].as_i64().unwrap() * 10
    );

    // A live run without credit is refused as the API refuses it.
    b.run("runbase/placeholder-image", &[("input.prompt", "x")])
        .await
        .assert_error(402, "insufficient_balance");
    let kinds = ledger_kinds(&s, "free@example.com");
    assert!(kinds.is_empty(), "nothing charged: {kinds:?}");
}

#[tokio::test]
async fn sessions_csrf_and_accounts_are_enforced() {
    let s = server();
    let model = "runbase/placeholder-image";

    // Without a session the form is shown, and running asks to log in.
    let mut anon = Browser::new(&s);
    let page = anon.get(&format!("/models/{model}")).await;
    assert_eq!(page.status, 200);
    assert!(page.text.contains(r#"id="pg-form""#));
    assert!(page.text.contains(r#"id="pg-login""#), "{}", page.text);
    assert!(
        page.text
            .contains("/login?next=%2Fmodels%2Frunbase%2Fplaceholder-image")
    );
    anon.post_json(
        "/playground/runs",
        &[("model", model), ("input.prompt", "x")],
    )
    .await
    .assert_error(401, "not_logged_in");
    let p = anon
        .post_html(
            "/playground/runs",
            &[("model", model), ("input.prompt", "x")],
        )
        .await;
    assert_eq!((p.status, p.header("location")), (303, "/login"));

    // Alice runs; a wrong CSRF token is refused.
    let mut alice = Browser::new(&s);
    alice.log_in_new(&s, "alice@example.com", 50).await;
    alice
        .post_json(
            "/playground/runs",
            &[
                ("model", model),
                ("input.prompt", "x"),
                ("csrf_token", "forged"),
            ],
        )
        .await
        .assert_error(403, "csrf_failed");
    let run = alice.run(model, &[("input.prompt", "mine")]).await;
    assert_eq!(run.status, 201, "{}", run.text);
    let id = run.json()["id"].as_str().unwrap().to_owned();
    alice.wait(&id).await;

    // Bob sees nothing of it, and neither does a visitor without a session.
    let mut bob = Browser::new(&s);
    bob.log_in_new(&s, "bob@example.com", 0).await;
    let path = format!("/playground/runs/{id}");
    bob.get_with(&path, &[("accept", "application/json")])
        .await
        .assert_error(404, "run_not_found");
    anon.get_with(&path, &[("accept", "application/json")])
        .await
        .assert_error(401, "not_logged_in");
    assert!(
        !bob.get(&format!("/models/{model}"))
            .await
            .text
            .contains(&id)
    );
    bob.get_with(
        "/playground/runs/run_nope",
        &[("accept", "application/json")],
    )
    .await
    .assert_error(404, "run_not_found");
}

#[tokio::test]
async fn model_pages_live_at_runbase_nets_address_without_shadowing_other_pages() {
    let s = server();
    let mut b = Browser::new(&s);

    // runbase.net's path is the same page as /models/{provider}/{name}.
    let page = b.get("/google/nano-banana-2").await;
    assert_eq!(page.status, 200, "{}", page.text);
    for part in [
        "Nano Banana 2",
        "google/nano-banana-2",
        "Google",
        "Text rendering",
        r#"id="pg-form""#,
        "Examples",
        "Poster with text",
        r#"href="/models/google/nano-banana-2?example=1#playground""#,
        "$0.06",
        "$0.13",
        "insufficient_balance",
    ] {
        assert!(page.text.contains(part), "{part} in {}", page.text);
    }
    // An example fills the form without script too.
    let ex = b.get("/models/google/nano-banana-2?example=1").await.text;
    assert!(ex.contains("VISIT MARS"), "{ex}");
    assert!(ex.contains(r#"<option value="2:3" selected>"#), "{ex}");

    // Every fixed page and API route still answers as itself.
    assert!(b.get("/docs/runs").await.text.contains("<h1"));
    assert_eq!(b.get("/settings/credits").await.status, 303);
    assert_eq!(b.get("/runs/run_x").await.status, 303, "log in first");
    let api = b.get_with("/api/v1", &[]).await;
    api.assert_error(404, "not_found");
    let files = b.get_with("/files/run_x", &[]).await;
    assert_eq!(files.status, 404);
    assert_eq!(b.get("/nobody/nothing").await.status, 404);
    let post = b.post_json("/nobody/nothing", &[]).await;
    post.assert_error(404, "not_found");
    assert_eq!(b.get("/assets/app.css").await.status, 200);

    // The models index filters by tag and searches, on the server.
    let video = b.get("/models?tag=Text%20to%20video").await.text;
    assert!(video.contains("kling/kling-3.0") && !video.contains("google/nano-banana-2\""));
    let found = b.get("/models?q=seedream").await.text;
    assert!(found.contains("bytedance/seedream-4.5") && !found.contains("kling/kling-3.0"));
}

#[tokio::test]
async fn languages_follow_accept_language_and_the_remembered_switch() {
    let s = server();
    let mut b = Browser::new(&s);

    let de = b
        .get_with(
            "/models",
            &[
                ("accept", "text/html"),
                ("accept-language", "de-DE,de;q=0.9,en;q=0.5"),
            ],
        )
        .await;
    assert!(de.text.contains(r#"<html lang="de">"#), "{}", de.text);
    assert!(de.text.contains("<h1>Modelle</h1>"));
    assert_eq!(de.header("content-language"), "de");
    let ja = b
        .get_with(
            "/models/runbase/placeholder-image",
            &[("accept", "text/html"), ("accept-language", "ja")],
        )
        .await;
    assert!(ja.text.contains(r#"<html lang="ja">"#) && ja.text.contains("プレイグラウンド"));
    let zh = b
        .get_with(
            "/login",
            &[("accept", "text/html"), ("accept-language", "zh-CN")],
        )
        .await;
    assert!(zh.text.contains(r#"<html lang="zh-CN">"#) && zh.text.contains("登录"));
    let other = b
        .get_with(
            "/models",
            &[("accept", "text/html"), ("accept-language", "fr")],
        )
        .await;
    assert!(other.text.contains(r#"<html lang="en">"#) && other.text.contains("<h1>Models</h1>"));

    // The switch remembers the choice in a cookie, over Accept-Language, and goes back.
    let p = b.get("/language?lang=ja&next=%2Fmodels%3Ftag%3D4K").await;
    assert_eq!((p.status, p.header("location")), (303, "/models?tag=4K"));
    assert!(p.header("set-cookie").starts_with("rb_lang=ja;"), "{p:?}");
    let page = b
        .get_with(
            "/models",
            &[("accept", "text/html"), ("accept-language", "de")],
        )
        .await;
    assert!(page.text.contains(r#"<html lang="ja">"#), "{}", page.text);
    // The page links to every language.
    for code in ["en", "de", "zh-CN"] {
        assert!(
            page.text
                .contains(&format!("/language?lang={code}&amp;next=%2Fmodels")),
            "{code}"
        );
    }
    // Nowhere but this site, and an unknown language changes nothing.
    let p = b
        .get("/language?lang=de&next=https%3A%2F%2Fevil.example%2F")
        .await;
    assert_eq!(p.header("location"), "/");
    let p = b.get("/language?lang=xx&next=%2F").await;
    assert!(p.header("set-cookie").is_empty());

    // API error messages stay English.
    let en = s.client().get(None, "/api/v1/runs").await;
    let api = b
        .get_with("/api/v1/runs", &[("accept-language", "de")])
        .await;
    assert_eq!(api.json(), en.body);
    assert_eq!(api.status, 401);
}

/// The Playground key's own settings hold in the Playground: its IP allowlist against the
/// browser's address, and disabling it stops the Playground (no fresh key replaces it).
#[tokio::test]
async fn the_playground_key_settings_hold_in_the_playground() {
    let s = server();
    let mut b = Browser::new(&s);
    b.log_in_new(&s, "pgkey@example.com", 100).await;
    let model = "runbase/placeholder-image";
    let fields = [("input.prompt", "a kite")];
    let first = b.run(model, &fields).await;
    assert_eq!(first.status, 201, "{}", first.text);
    let key_id = first.json()["keyId"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            let listed = s.cli(&["keys", "list", "--account", "pgkey@example.com"]);
            listed
                .lines()
                .find(|l| l.contains("Playground"))
                .and_then(|l| l.split_whitespace().find(|w| w.starts_with("key_")))
                .unwrap_or_else(|| panic!("no Playground key in {listed}"))
                .to_owned()
        });

    // An allowlist without the browser's address refuses the Playground's runs.
    s.cli(&["keys", "update", &key_id, "--allow-ip", "10.9.9.9"]);
    b.run(model, &fields)
        .await
        .assert_error(403, "ip_not_allowed");
    s.cli(&["keys", "update", &key_id, "--clear-allow-ips"]);
    assert_eq!(b.run(model, &fields).await.status, 201);

    // Disabled: refused, and no new Playground key is made behind the user's back.
    s.cli(&["keys", "disable", &key_id]);
    let refused = b.run(model, &fields).await;
    refused.assert_error(400, "invalid_request");
    assert!(refused.text.contains("Settings"), "{}", refused.text);
    let listed = s.cli(&["keys", "list", "--account", "pgkey@example.com"]);
    assert_eq!(listed.matches("Playground").count(), 1, "{listed}");
    s.cli(&["keys", "enable", &key_id]);
    assert_eq!(b.run(model, &fields).await.status, 201);
}

/// A Playground run carries the API's `RateLimit-*` headers; one over the key's rate limit is a
/// 429 with `Retry-After` too (runbase.md: a 429 carries `Retry-After`), and is not charged.
#[tokio::test]
async fn a_playground_run_over_the_rate_limit_says_when_to_retry() {
    let s = Server::start_with(&[
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "3"),
        ("RUNBASE_RATE_LIMITS__AUTH__REQUESTS", "100"),
    ]);
    let mut b = Browser::new(&s);
    b.log_in_new(&s, "limited@example.com", 100).await;
    // A field the form cannot read counts against the limit, and its 400 says so.
    let bad = b
        .run(
            "runbase/echo",
            &[("input.text", "t"), ("input.delay_ms", "abc")],
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert_eq!(bad.header("ratelimit-limit"), "3");
    assert_eq!(bad.header("ratelimit-remaining"), "2");
    let model = "runbase/placeholder-image";
    let fields = [("input.prompt", "p")];
    for left in ["1", "0"] {
        let run = b.run(model, &fields).await;
        assert_eq!(run.status, 201, "{}", run.text);
        assert_eq!(run.header("ratelimit-limit"), "3");
        assert_eq!(run.header("ratelimit-remaining"), left);
        assert!(run.headers.contains_key("ratelimit-reset"));
    }
    // A field the form cannot read is read after the limiter, as the API reads a body: over
    // the limit it is the 429.
    let bad = b
        .run(
            "runbase/echo",
            &[("input.text", "t"), ("input.delay_ms", "abc")],
        )
        .await;
    assert_eq!(bad.status, 429, "{}", bad.text);
    let refused = b.run(model, &fields).await;
    assert_eq!(refused.status, 429, "{}", refused.text);
    assert_eq!(refused.json()["error"]["code"], "RATE_LIMITED");
    let retry: u64 = refused.header("retry-after").parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    assert_eq!(refused.header("ratelimit-limit"), "3");
    assert_eq!(refused.header("ratelimit-remaining"), "0");
    let kinds = ledger_kinds(&s, "limited@example.com");
    assert_eq!(
        kinds.iter().filter(|k| *k == "run_charge").count(),
        2,
        "{kinds:?}"
    );
}

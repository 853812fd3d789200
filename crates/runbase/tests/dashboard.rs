//! The dashboard over real HTTP, as a browser without JavaScript would use it: sessions and
//! their cookie flags, CSRF on every form, the per-IP auth limits, account isolation, Stripe
//! top-ups through signed webhooks (against a local double of Stripe's API), administrator
//! grants, and docs generated from the server's own tables. The same flows in a real browser
//! are in `e2e/` (driven by `tests/browser.rs`).

#![allow(clippy::unwrap_used, reason = "tests")]

mod common;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use common::Server;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

const PASSWORD: &str = "correct horse battery";

/// A cookie-keeping client that does not follow redirects, like a browser's network layer.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: BTreeMap<String, String>,
}

/// A response as a test reads it.
#[derive(Debug)]
struct Page {
    status: u16,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Page {
    fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap_or_else(|_| panic!("not JSON: {}", self.text))
    }

    /// The first `name="csrf_token" value="..."` of the page.
    fn csrf(&self) -> String {
        let at = self
            .text
            .find(r#"name="csrf_token" value=""#)
            .unwrap_or_else(|| panic!("no CSRF field in {}", self.text));
        let rest = &self.text[at + r#"name="csrf_token" value=""#.len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    }

    fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
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

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    async fn send(&mut self, req: reqwest::RequestBuilder) -> Page {
        let req = if self.cookies.is_empty() {
            req
        } else {
            req.header("cookie", self.cookie_header())
        };
        let r = req.send().await.unwrap();
        let page = Page {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            text: r.text().await.unwrap(),
        };
        for c in page.set_cookies() {
            let pair = c.split(';').next().unwrap();
            let (k, v) = pair.split_once('=').unwrap();
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

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> Page {
        let req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("accept", "text/html")
            .form(form);
        self.send(req).await
    }

    /// Posts the form of the page at `page_path`, with that page's CSRF token.
    async fn submit(&mut self, page_path: &str, action: &str, form: &[(&str, &str)]) -> Page {
        let token = self.get(page_path).await.csrf();
        let mut fields = form.to_vec();
        fields.push(("csrf_token", &token));
        self.post(action, &fields).await
    }

    /// Signs up, then logs in (a sign-up answers the same whether or not the email was
    /// taken, so it never logs in by itself); returns the log-in's answer.
    async fn sign_up(&mut self, email: &str) -> Page {
        let page = self
            .submit(
                "/signup",
                "/signup",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.text);
        assert!(
            page.location().starts_with("/login?signed_up=1"),
            "{}",
            page.location()
        );
        let page = self
            .submit(
                "/login",
                "/login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.text);
        page
    }

    /// Makes an account with the CLI and logs in with the form (without the sign-up form, so
    /// a test of something else does not depend on how sign-up answers).
    async fn log_in_new(&mut self, server: &Server, email: &str) -> Page {
        server.cli_with_stdin(
            &["accounts", "create", email, "--password-stdin"],
            &format!("{PASSWORD}\n"),
        );
        let page = self
            .submit(
                "/login",
                "/login",
                &[("email", email), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(page.status, 303, "{}", page.text);
        page
    }

    /// Creates a key with the form's fields: the post is answered with a redirect, and the page
    /// it leads to (returned) shows the secret once.
    async fn create_key(&mut self, form: &[(&str, &str)]) -> Page {
        let posted = self
            .submit("/settings/api-keys", "/settings/api-keys", form)
            .await;
        assert_eq!(posted.status, 303, "{}", posted.text);
        let to = posted.location().to_owned();
        assert!(to.starts_with("/settings/api-keys?created=key_"), "{to}");
        self.get(&to).await
    }

    async fn session(&mut self) -> Value {
        let req = self
            .http
            .get(format!("{}/auth/session", self.base))
            .header("accept", "application/json");
        self.send(req).await.json()
    }
}

/// A double of Stripe's Checkout API: records each session it creates.
#[derive(Default)]
struct StripeDouble {
    sessions: Mutex<Vec<BTreeMap<String, String>>>,
}

async fn stripe_double() -> (String, Arc<StripeDouble>) {
    async fn create(
        State(seen): State<Arc<StripeDouble>>,
        headers: axum::http::HeaderMap,
        body: String,
    ) -> axum::Json<Value> {
        assert_eq!(headers["authorization"], "Bearer sk_test_runbase");
        let fields: BTreeMap<String, String> = serde_urlencoded_pairs(&body);
        let mut sessions = seen.sessions.lock().unwrap();
        let id = format!("cs_test_{}", sessions.len() + 1);
        let mut fields = fields;
        fields.insert("id".into(), id.clone());
        sessions.push(fields);
        axum::Json(
            json!({ "id": id, "object": "checkout.session", "url": format!("https://checkout.stripe.test/pay/{id}") }),
        )
    }
    let seen = Arc::new(StripeDouble::default());
    let app = Router::new()
        .route("/v1/checkout/sessions", post(create))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

fn serde_urlencoded_pairs(body: &str) -> BTreeMap<String, String> {
    form_urlencoded::parse(body.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

const WEBHOOK_SECRET: &str = "whsec_test_runbase";

fn stripe_env(api_base: &str) -> Vec<(String, String)> {
    vec![
        (
            "RUNBASE_PAYMENTS__STRIPE__SECRET_KEY".into(),
            "sk_test_runbase".into(),
        ),
        (
            "RUNBASE_PAYMENTS__STRIPE__WEBHOOK_SECRET".into(),
            WEBHOOK_SECRET.into(),
        ),
        ("RUNBASE_PAYMENTS__STRIPE__API_BASE".into(), api_base.into()),
    ]
}

fn start(env: &[(String, String)]) -> Server {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Server::start_with(&env)
}

fn paid_event(event_id: &str, checkout: &str, account: &str, cents: i64) -> String {
    json!({
        "id": event_id,
        "object": "event",
        "type": "checkout.session.completed",
        "data": { "object": {
            "id": checkout,
            "object": "checkout.session",
            "payment_status": "paid",
            "amount_total": cents,
            "currency": "usd",
            "client_reference_id": account,
            "metadata": { "account_id": account },
        }},
    })
    .to_string()
}

async fn deliver(server: &Server, body: &str, signature: &str) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", server.url))
        .header("content-type", "application/json")
        .header("stripe-signature", signature)
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

#[tokio::test]
async fn session_cookie_flags_and_pages_that_need_a_session() {
    // More log-ins than the default limit of 5 a minute allows.
    let server = start(&[("RUNBASE_RATE_LIMITS__AUTH__REQUESTS".into(), "20".into())]);
    let mut b = Browser::new(&server);
    // Pages that need a session send the browser to /login, remembering where it was going.
    for path in [
        "/",
        "/settings/api-keys",
        "/settings/credits",
        "/runs",
        "/settings/password",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 303, "{path}");
        assert!(
            p.location().starts_with("/login"),
            "{path}: {}",
            p.location()
        );
    }
    assert_eq!(
        b.get("/runs?status=failed").await.location(),
        "/login?next=%2Fruns%3Fstatus%3Dfailed"
    );
    // Public pages.
    for path in [
        "/login",
        "/signup",
        "/models",
        "/models/google/nano-banana-2",
        "/docs/runs",
    ] {
        assert_eq!(b.get(path).await.status, 200, "{path}");
    }

    let page = b.sign_up("Ada@Example.com").await;
    assert_eq!(page.location(), "/");
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("rb_session="))
        .unwrap();
    for flag in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(flag), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let me = b.session().await;
    assert_eq!(me["account"]["email"], "ada@example.com");
    assert_eq!(
        me["account"]["admin"], true,
        "the first account administers"
    );
    let home = b.get("/").await;
    assert_eq!(home.status, 200);
    assert!(home.text.contains("ada@example.com"));
    assert_eq!(home.headers["cache-control"], "no-store");
    assert!(
        home.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    assert!(
        home.headers["content-security-policy"]
            .to_str()
            .unwrap()
            .contains("form-action 'self'"),
        "forms post to this site only"
    );

    // Log out: the session is gone server-side, not just the cookie.
    let stolen = b.cookies["rb_session"].clone();
    let out = b.submit("/", "/logout", &[]).await;
    assert_eq!(out.status, 303);
    let mut thief = Browser::new(&server);
    thief.cookies.insert("rb_session".into(), stolen);
    assert_eq!(thief.get("/").await.location(), "/login");

    // The same account logs in again; a wrong password is refused in the same words as an
    // unknown email.
    let wrong = b
        .submit(
            "/login",
            "/login",
            &[("email", "ada@example.com"), ("password", "nope nope nope")],
        )
        .await;
    assert_eq!(wrong.status, 401);
    assert!(wrong.text.contains("Email or password is incorrect"));
    let unknown = b
        .submit(
            "/login",
            "/login",
            &[("email", "who@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(unknown.status, 401);
    assert!(unknown.text.contains("Email or password is incorrect"));
    let ok = b
        .submit(
            "/login",
            "/login",
            &[
                ("email", "ADA@example.com"),
                ("password", PASSWORD),
                ("next", "/runs"),
            ],
        )
        .await;
    assert_eq!((ok.status, ok.location()), (303, "/runs"));
    // No open redirect after log-in. Browsers drop a tab from a URL: "/\t/evil.example" would
    // be "//evil.example".
    for next in ["//evil.example/", "/\t/evil.example/"] {
        b.cookies.remove("rb_session");
        let ok = b
            .submit(
                "/login",
                "/login",
                &[
                    ("email", "ada@example.com"),
                    ("password", PASSWORD),
                    ("next", next),
                ],
            )
            .await;
        assert_eq!(ok.location(), "/", "{next:?}");
    }
    // A malformed query string gets the error page, not the framework's plain-text rejection.
    let bad = b.get("/settings/credits?before=abc").await;
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(
        bad.text.contains("<html") && bad.text.contains("Bad query string"),
        "{}",
        bad.text
    );
}

#[tokio::test]
async fn cookies_are_secure_behind_tls() {
    let server = start(&[(
        "RUNBASE_PUBLIC_URL".into(),
        "https://runbase.example".into(),
    )]);
    let mut b = Browser::new(&server);
    let login = b.get("/login").await;
    assert!(
        login.set_cookies()[0].contains("; Secure"),
        "{:?}",
        login.set_cookies()
    );
    // Over HTTPS every cookie takes the __Host- prefix: Secure, Path=/, no Domain, so neither
    // a sibling subdomain nor a plain-HTTP page can plant one.
    assert!(
        login.set_cookies()[0].starts_with("__Host-rb_csrf="),
        "{:?}",
        login.set_cookies()
    );
    let page = b.sign_up("tls@example.com").await;
    let cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-rb_session="))
        .unwrap_or_else(|| panic!("{:?}", page.set_cookies()));
    assert!(cookie.contains("; Secure"), "{cookie}");
    assert!(cookie.contains("; Path=/"), "{cookie}");
    assert!(!cookie.contains("Domain"), "{cookie}");
    assert_eq!(
        b.get("/").await.status,
        200,
        "the prefixed cookie is read back"
    );
    // An unprefixed cookie (planted over plain HTTP) is not the session.
    let token = b.cookies.remove("__Host-rb_session").unwrap();
    b.cookies.insert("rb_session".into(), token);
    assert!(b.get("/").await.location().starts_with("/login"));
}

#[tokio::test]
async fn every_form_needs_its_csrf_token() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    // Log-in and sign-up: the double-submit token must match the cookie.
    b.get("/signup").await;
    let p = b
        .post(
            "/signup",
            &[("email", "x@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 403, "{}", p.text);
    assert!(p.text.contains("csrf_failed"));
    let p = b
        .post(
            "/signup",
            &[
                ("email", "x@example.com"),
                ("password", PASSWORD),
                ("csrf_token", "forged-forged-forged-forged"),
            ],
        )
        .await;
    assert_eq!(p.status, 403);
    b.sign_up("x@example.com").await;

    // Logged in: a form without the session's token changes nothing.
    let p = b.post("/settings/api-keys", &[("name", "sneaky")]).await;
    assert_eq!(p.status, 403);
    let keys = b.get("/settings/api-keys").await;
    assert!(!keys.text.contains("sneaky"));
    // The pre-session token is not the session's token either.
    let pre = b.cookies["rb_csrf"].clone();
    let p = b
        .post(
            "/settings/api-keys",
            &[("name", "sneaky"), ("csrf_token", &pre)],
        )
        .await;
    assert_eq!(p.status, 403);
    // JSON callers get the envelope.
    let r = reqwest::Client::new()
        .post(format!("{}/logout", server.url))
        .header("cookie", b.cookie_header())
        .header("accept", "application/json")
        .form(&[("x", "y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "csrf_failed");
    // With its token, the form works (and the key's secret is on that one response only).
    let created = b.create_key(&[("name", "mine")]).await;
    assert_eq!(created.status, 200);
    assert!(created.text.contains("id=\"new-key-secret\""));
    let again = b.get("/settings/api-keys").await;
    assert!(again.text.contains("mine"));
    assert!(!again.text.contains("new-key-secret"));
}

#[tokio::test]
async fn login_attempts_are_limited_per_ip_before_anything_else() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.sign_up("rate@example.com").await; // 1 and 2 of 5 (sign-up, then log-in)
    b.cookies.remove("rb_session");
    // Wrong passwords, no CSRF token, garbage: every request counts.
    b.submit(
        "/login",
        "/login",
        &[
            ("email", "rate@example.com"),
            ("password", "wrong password!"),
        ],
    )
    .await; // 3
    b.post("/login", &[("email", "rate@example.com")]).await; // 4 (no CSRF)
    let fifth = b
        .submit(
            "/login",
            "/login",
            &[("email", "rate@example.com"), ("password", "wrong again!!")],
        )
        .await;
    assert_eq!(fifth.status, 401);
    assert_eq!(fifth.headers["ratelimit-remaining"], "0");
    // The sixth, even with the right password and token, is refused.
    let sixth = b
        .submit(
            "/login",
            "/login",
            &[("email", "rate@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(sixth.status, 429, "{}", sixth.text);
    assert!(sixth.text.contains("<html"), "a page for browsers");
    let retry: u64 = sixth.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(sixth.headers["ratelimit-limit"], "5");
    assert!(!b.cookies.contains_key("rb_session"));
    // API-style callers get the envelope.
    let r = reqwest::Client::new()
        .post(format!("{}/login", server.url))
        .header("accept", "application/json")
        .json(&json!({"email": "rate@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    let body: Value = r.json().await.unwrap();
    assert_eq!(
        body,
        json!({"error": {"message": "Rate limit exceeded", "code": "RATE_LIMITED"}})
    );
    // Password changes share the auth limit, and it is checked before the session is.
    let mut other = Browser::new(&server);
    other.cookies = b.cookies.clone();
    let p = other.post("/settings/password", &[]).await;
    assert_eq!(p.status, 429, "{}", p.text);
}

#[tokio::test]
async fn the_session_check_is_limited_to_sixty_a_minute() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    let mut last = None;
    for _ in 0..60 {
        let r = reqwest::Client::new()
            .get(format!("{}/auth/session", server.url))
            .send()
            .await
            .unwrap();
        last = Some((
            r.status().as_u16(),
            r.headers()["ratelimit-remaining"].clone(),
        ));
    }
    assert_eq!(last, Some((401, "0".parse().unwrap())));
    let r = b.session().await;
    assert_eq!(r["error"]["code"], "RATE_LIMITED", "{r}");
}

#[tokio::test]
async fn another_accounts_keys_runs_and_ledger_are_never_visible() {
    let server = Server::start();
    let mut ada = Browser::new(&server);
    ada.sign_up("ada@example.com").await;
    server.cli(&[
        "credits",
        "add",
        "--account",
        "ada@example.com",
        "--cents",
        "500",
    ]);
    let created = ada.create_key(&[("name", "ada-key")]).await;
    let secret = {
        let at = created.text.find("id=\"new-key-secret\"").unwrap();
        let rest = &created.text[at..];
        let start = rest.find("sk-").unwrap();
        rest[start..start + rest[start..].find('<').unwrap()].to_owned()
    };
    let key_id = {
        let at = created.text.find("/settings/api-keys/key_").unwrap();
        let rest = &created.text[at + "/settings/api-keys/".len()..];
        rest[..rest.find('"').unwrap()].to_owned()
    };
    let api = server.client();
    let run = api
        .create(
            &secret,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "a fox"}}),
        )
        .await;
    assert_eq!(run.status, 201, "{}", run.body);
    let run_id = run.body["id"].as_str().unwrap().to_owned();
    api.wait(&secret, &run_id).await;
    let own = ada.get(&format!("/runs/{run_id}")).await;
    assert_eq!(own.status, 200);
    assert!(own.text.contains("<img"), "the image is shown inline");
    assert!(own.text.contains("run charge"), "the run's ledger line");

    let mut eve = Browser::new(&server);
    eve.sign_up("eve@example.com").await;
    assert_eq!(eve.session().await["account"]["admin"], false);
    for path in [
        format!("/runs/{run_id}"),
        format!("/settings/api-keys/{key_id}"),
    ] {
        let p = eve.get(&path).await;
        assert_eq!(p.status, 404, "{path}");
        assert!(!p.text.contains("ada"), "{path}");
    }
    // Changing, disabling or deleting it is a 404 and changes nothing.
    for action in ["", "/disable", "/delete"] {
        let p = eve
            .submit(
                "/settings/credits",
                &format!("/settings/api-keys/{key_id}{action}"),
                &[("name", "pwned"), ("confirm", "yes")],
            )
            .await;
        assert_eq!(p.status, 404, "{action}");
    }
    assert_eq!(
        api.run(&secret, &run_id).await.status,
        200,
        "ada's key still works"
    );
    let credits = eve.get("/settings/credits").await;
    assert!(!credits.text.contains(&run_id));
    assert!(credits.text.contains("No ledger entries yet"));
    assert!(!eve.get("/runs").await.text.contains(&run_id));
    // A page of runs after another account's run, or after no run, is a 404 (as the API's
    // `startingAfter`), not silently the first page; after one's own run it is the next page.
    for after in [
        run_id.as_str(),
        "run_0000000000nosuchrun",
        "bogus",
        "run_%00",
    ] {
        let p = eve.get(&format!("/runs?after={after}")).await;
        assert_eq!(p.status, 404, "{after}: {}", p.text);
        assert!(p.text.contains("run_not_found"), "{after}");
        assert!(!p.text.contains("ada"), "{after}");
    }
    assert_eq!(eve.get("/runs?after=").await.status, 200);
    let next = ada.get(&format!("/runs?after={run_id}")).await;
    assert_eq!(next.status, 200);
    assert!(
        !next.text.contains(&format!("/runs/{run_id}")),
        "older than the only run: none"
    );
    assert!(!eve.get("/settings/api-keys").await.text.contains("ada-key"));
    // Eve is not an administrator: she cannot grant herself credits.
    let p = eve
        .submit(
            "/settings/credits",
            "/settings/credits/grant",
            &[("email", "eve@example.com"), ("cents", "100000")],
        )
        .await;
    assert_eq!(p.status, 403);
    assert!(eve.get("/settings/credits").await.text.contains("$0.00"));
}

#[tokio::test]
async fn administrators_grant_credits_in_the_ledger_with_their_name() {
    let server = Server::start();
    let mut admin = Browser::new(&server);
    admin.sign_up("root@example.com").await;
    let mut user = Browser::new(&server);
    user.sign_up("user@example.com").await;
    let p = admin
        .submit(
            "/settings/credits",
            "/settings/credits/grant",
            &[
                ("email", "user@example.com"),
                ("cents", "1234"),
                ("memo", "welcome"),
            ],
        )
        .await;
    assert_eq!(
        (p.status, p.location()),
        (303, "/settings/credits?granted=1")
    );
    let credits = user.get("/settings/credits").await;
    assert!(credits.text.contains("$12.34"));
    assert!(
        credits.text.contains("Grant by root@example.com"),
        "{}",
        credits.text
    );
    let shown = server.cli(&["credits", "show", "--account", "user@example.com", "--json"]);
    assert!(
        shown.contains("\"grantedBy\": \"root@example.com\"")
            || shown.contains("\"grantedBy\":\"root@example.com\""),
        "{shown}"
    );
    // Refused with a message, and nothing is credited: bad amounts (the message names the
    // bound, under it and over it), and notes with control or direction characters (the note
    // is shown to the credited account).
    let amount = "from 1 to 100000000";
    let control = "cannot contain control characters";
    for (cents, memo, says) in [
        ("-5", None, amount),
        ("100000001", None, amount),
        ("5", Some("gift\u{202e}txt"), control),
        ("5", Some("gift\u{1b}[31m"), control),
        ("5", Some("line\nbreak"), control),
    ] {
        let mut form = vec![("email", "user@example.com"), ("cents", cents)];
        form.extend(memo.map(|m| ("memo", m)));
        let p = admin
            .submit("/settings/credits", "/settings/credits/grant", &form)
            .await;
        assert_eq!(p.status, 200, "{cents} {memo:?}");
        assert!(p.text.contains(says), "{cents} {memo:?}: {}", p.text);
    }
    assert!(user.get("/settings/credits").await.text.contains("$12.34"));
}

#[tokio::test]
async fn password_change_closes_other_sessions() {
    let server = start(&[("RUNBASE_RATE_LIMITS__AUTH__REQUESTS".into(), "100".into())]);
    let mut laptop = Browser::new(&server);
    laptop.sign_up("pw@example.com").await;
    let mut phone = Browser::new(&server);
    phone
        .submit(
            "/login",
            "/login",
            &[("email", "pw@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(phone.get("/").await.status, 200);
    let wrong = laptop
        .submit(
            "/settings/password",
            "/settings/password",
            &[
                ("current_password", "not it at all"),
                ("new_password", "a brand new secret"),
            ],
        )
        .await;
    assert_eq!(wrong.status, 401);
    let short = laptop
        .submit(
            "/settings/password",
            "/settings/password",
            &[("current_password", PASSWORD), ("new_password", "short")],
        )
        .await;
    assert_eq!(short.status, 400);
    let ok = laptop
        .submit(
            "/settings/password",
            "/settings/password",
            &[
                ("current_password", PASSWORD),
                ("new_password", "a brand new secret"),
            ],
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    assert_eq!(laptop.get("/").await.status, 200, "this session stays");
    assert_eq!(
        phone.get("/").await.status,
        303,
        "the other session is closed"
    );
    let old = phone
        .submit(
            "/login",
            "/login",
            &[("email", "pw@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(old.status, 401);
}

#[tokio::test]
async fn stripe_top_up_credits_once_per_payment() {
    let (stripe_url, stripe) = stripe_double().await;
    let server = start(&stripe_env(&stripe_url));
    let mut b = Browser::new(&server);
    b.sign_up("pay@example.com").await;
    let account = b.session().await["account"]["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let p = b
        .submit(
            "/settings/credits",
            "/settings/credits/topup",
            &[("amount_cents", "2500")],
        )
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    assert_eq!(p.location(), "https://checkout.stripe.test/pay/cs_test_1");
    // The credits page lets its form lead to the checkout (browsers hold the redirect after a
    // form to `form-action`), and nowhere else.
    let credits = b.get("/settings/credits").await;
    let csp = credits.headers["content-security-policy"].to_str().unwrap();
    assert!(
        csp.contains(&format!(
            "form-action 'self' https://checkout.stripe.com {stripe_url}"
        )),
        "{csp}"
    );
    let session = stripe.sessions.lock().unwrap()[0].clone();
    assert_eq!(session["client_reference_id"], account);
    assert_eq!(session["line_items[0][price_data][unit_amount]"], "2500");
    assert_eq!(
        session["success_url"],
        format!("{}/settings/credits?topup=success", server.url)
    );
    // Out-of-range amounts never reach Stripe.
    let p = b
        .submit(
            "/settings/credits",
            "/settings/credits/topup",
            &[("amount_cents", "1")],
        )
        .await;
    assert_eq!(p.status, 400);
    assert_eq!(stripe.sessions.lock().unwrap().len(), 1);

    let body = paid_event("evt_1", "cs_test_1", &account, 2500);
    let sig = runbase_payments::sign_payload(WEBHOOK_SECRET, now_unix(), body.as_bytes());
    // Forged, tampered and stale deliveries are refused.
    let forged = runbase_payments::sign_payload("whsec_wrong", now_unix(), body.as_bytes());
    assert_eq!(
        deliver(&server, &body, &forged).await.1["error"]["code"],
        "invalid_signature"
    );
    let tampered = body.replace("2500", "250000");
    assert_eq!(deliver(&server, &tampered, &sig).await.0, 400);
    let stale = runbase_payments::sign_payload(WEBHOOK_SECRET, now_unix() - 3600, body.as_bytes());
    assert_eq!(deliver(&server, &body, &stale).await.0, 400);
    assert!(b.get("/settings/credits").await.text.contains("$0.00"));

    let (status, out) = deliver(&server, &body, &sig).await;
    assert_eq!(
        (status, out["outcome"].as_str()),
        (200, Some("credited")),
        "{out}"
    );
    // Stripe delivers at least once: the same event again, and another event for the same
    // checkout, credit nothing more.
    assert_eq!(
        deliver(&server, &body, &sig).await.1["outcome"],
        "already_credited"
    );
    let again = paid_event("evt_2", "cs_test_1", &account, 2500);
    let sig2 = runbase_payments::sign_payload(WEBHOOK_SECRET, now_unix(), again.as_bytes());
    assert_eq!(
        deliver(&server, &again, &sig2).await.1["outcome"],
        "already_credited"
    );
    // A paid checkout that was never started here credits nobody.
    let stranger = paid_event("evt_3", "cs_elsewhere", &account, 9900);
    let sig3 = runbase_payments::sign_payload(WEBHOOK_SECRET, now_unix(), stranger.as_bytes());
    assert_eq!(
        deliver(&server, &stranger, &sig3).await.1["outcome"],
        "unknown_checkout"
    );

    let credits = b.get("/settings/credits").await;
    assert!(
        credits.text.contains(r#"id="balance">$25.00"#),
        "{}",
        credits.text
    );
    assert!(credits.text.contains("Top-up via stripe (cs_test_1)"));
    // The ledger explains the balance.
    let shown: Value = serde_json::from_str(&server.cli(&[
        "credits",
        "show",
        "--account",
        "pay@example.com",
        "--json",
    ]))
    .unwrap();
    let entries = shown["ledger"].as_array().cloned().unwrap();
    let sum: i64 = entries
        .iter()
        .map(|e| e["amountUsd"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, 2500 * 10_000, "{shown}");
}

#[tokio::test]
async fn without_payments_configured_top_up_says_so() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.sign_up("nopay@example.com").await;
    let page = b.get("/settings/credits").await;
    assert!(page.text.contains("Online payments are not configured"));
    let p = b
        .submit(
            "/settings/credits",
            "/settings/credits/topup",
            &[("amount_cents", "2500")],
        )
        .await;
    assert_eq!(p.status, 503);
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/stripe", server.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
}

#[tokio::test]
async fn docs_are_generated_from_what_the_server_enforces() {
    let server = start(&[
        ("RUNBASE_RATE_LIMITS__AUTH__REQUESTS".into(), "7".into()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS".into(), "33".into()),
    ]);
    let mut b = Browser::new(&server);
    let limits = b.get("/docs/rate-limits").await.text;
    assert!(limits.contains("7 requests per 60 seconds"), "{limits}");
    assert!(limits.contains("33 requests per 10 seconds"));
    assert!(limits.contains("60 requests per 60 seconds"));
    let codes = b.get("/docs/error-codes").await.text;
    for (code, status) in [
        ("invalid_json", 400),
        ("missing_model", 400),
        ("missing_input", 400),
        ("invalid_input", 400),
        ("model_not_found", 400),
        ("missing_api_key", 401),
        ("invalid_api_key", 401),
        ("insufficient_balance", 402),
        ("api_key_spend_limit_exceeded", 403),
        ("ip_not_allowed", 403),
        ("RATE_LIMITED", 429),
        ("USAGE_EXCEEDED", 429),
        ("run_not_found", 404),
        ("internal_error", 500),
        ("idempotency_key_mismatch", 409),
        ("idempotency_key_in_use", 409),
    ] {
        assert!(
            codes.contains(&format!("<td>{status}</td><td><code>{code}</code>")),
            "{code}"
        );
    }
    assert!(codes.contains("support@runbase.net"));
    // The header of safe retries, with what is kept and for how long.
    let runs = b.get("/docs/runs").await.text;
    for needle in [
        "Idempotency-Key: order-4711",
        "Idempotent-Replayed: true",
        "kept for 24 hours",
        "409 idempotency_key_in_use",
    ] {
        assert!(runs.contains(needle), "{needle}");
    }
    // A model page: schema tables from the schema, the curl quick start, the error table.
    let model = b.get("/models/google/nano-banana-2").await.text;
    for needle in [
        "<code>aspect_ratio</code>",
        "one of 1:1, 1:4",
        "<code>urls</code>",
        "/api/v1/runs",
        "ip_not_allowed",
        "$0.13 (resolution 4K)",
    ] {
        assert!(model.contains(needle), "{needle}");
    }
    let search = b.get("/models?q=banana&category=text+to+image").await.text;
    assert!(
        search.contains("google/nano-banana-2") && !search.contains("meta/llama-3-8b-instruct")
    );
    // Unknown pages: a page with the support contact for browsers, the envelope for the API.
    let missing = b.get("/no/such/page").await;
    assert_eq!(missing.status, 404);
    assert!(missing.text.contains("support@runbase.net"));
    let api = server.client().get(None, "/api/v1/nope").await;
    api.assert_error(404, "not_found");
}

#[tokio::test]
async fn a_key_save_changes_only_the_fields_it_sends() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.sign_up("partial@example.com").await;
    let created = b
        .create_key(&[
            ("name", "ci"),
            ("allow_ips", "203.0.113.7\n10.0.0.0/8"),
            ("spend_limit_cents", "500"),
        ])
        .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let at = created.text.find("href=\"/settings/api-keys/").unwrap() + 6;
    let rest = &created.text[at..];
    let path = rest[..rest.find('"').unwrap()].to_owned();

    // Only the name: the allowlist and the spend limit stay.
    let saved = b.submit(&path, &path, &[("name", "ci renamed")]).await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    let page = b.get(&path).await;
    assert!(page.text.contains("ci renamed"), "{}", page.text);
    assert!(
        page.text.contains("203.0.113.7\n10.0.0.0/8"),
        "{}",
        page.text
    );
    assert!(page.text.contains(r#"value="500""#), "{}", page.text);

    // A field sent empty clears it.
    let saved = b.submit(&path, &path, &[("allow_ips", "")]).await;
    assert_eq!(saved.status, 303, "{}", saved.text);
    let page = b.get(&path).await;
    assert!(!page.text.contains("203.0.113.7"), "{}", page.text);
    assert!(page.text.contains("ci renamed") && page.text.contains(r#"value="500""#));

    // An empty name is refused and changes nothing.
    let refused = b
        .submit(&path, &path, &[("name", " "), ("allow_ips", "::1")])
        .await;
    assert_eq!(refused.status, 400, "{}", refused.text);
    assert!(!b.get(&path).await.text.contains("::1"));
}

#[tokio::test]
async fn sign_up_does_not_tell_who_is_registered() {
    let server = start(&[("RUNBASE_RATE_LIMITS__AUTH__REQUESTS".into(), "100".into())]);
    let mut owner = Browser::new(&server);
    owner.sign_up("taken@example.com").await;
    // Someone else signs up with the same email, and someone with a new one: the answers are
    // the same, and neither is logged in by it.
    let mut answers = Vec::new();
    for email in ["taken@example.com", "fresh@example.com"] {
        let mut b = Browser::new(&server);
        let p = b
            .submit(
                "/signup",
                "/signup",
                &[("email", email), ("password", "another password 123")],
            )
            .await;
        assert!(
            !p.set_cookies().iter().any(|c| c.starts_with("rb_session=")),
            "{email}"
        );
        let next = b.get(p.location()).await;
        assert!(next.text.contains("If this email was not registered yet"));
        answers.push((p.status, p.location().to_owned(), p.text.clone()));
        // JSON callers too.
        let r = reqwest::Client::new()
            .post(format!("{}/signup", server.url))
            .header("accept", "application/json")
            .header("cookie", b.cookie_header())
            .header("x-csrf-token", b.cookies["rb_csrf"].clone())
            .json(&json!({"email": email, "password": "another password 123"}))
            .send()
            .await
            .unwrap();
        let json_answer = (r.status().as_u16(), r.text().await.unwrap());
        assert!(!json_answer.1.contains("exists"), "{}", json_answer.1);
        answers.push((json_answer.0, String::new(), json_answer.1));
    }
    assert_eq!(answers[0], answers[2], "the form's answers differ");
    assert_eq!(answers[1], answers[3], "the JSON answers differ");
    // The registered account is unchanged: its owner's password still works, the other not.
    let mut other = Browser::new(&server);
    let p = other
        .submit(
            "/login",
            "/login",
            &[
                ("email", "taken@example.com"),
                ("password", "another password 123"),
            ],
        )
        .await;
    assert_eq!(p.status, 401);
    let mut again = Browser::new(&server);
    let p = again
        .submit(
            "/login",
            "/login",
            &[("email", "taken@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert_eq!(p.status, 303);
}

#[tokio::test]
async fn creating_a_key_redirects_and_shows_the_secret_once() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.log_in_new(&server, "once@example.com").await;
    let posted = b
        .submit(
            "/settings/api-keys",
            "/settings/api-keys",
            &[("name", "reloaded")],
        )
        .await;
    // A reload of the answer is a GET: it cannot create another key.
    assert_eq!(posted.status, 303, "{}", posted.text);
    assert!(!posted.text.contains("sk-"));
    let to = posted.location().to_owned();
    // Another session of the same account never sees the secret.
    let mut other = Browser::new(&server);
    other
        .submit(
            "/login",
            "/login",
            &[("email", "once@example.com"), ("password", PASSWORD)],
        )
        .await;
    assert!(!other.get(&to).await.text.contains("new-key-secret"));
    let shown = b.get(&to).await;
    assert!(
        shown.text.contains("id=\"new-key-secret\""),
        "{}",
        shown.text
    );
    let reloaded = b.get(&to).await;
    assert_eq!(reloaded.status, 200);
    assert!(!reloaded.text.contains("new-key-secret"));
    assert!(reloaded.text.contains("shown only once"));
    let keys = server.cli(&["keys", "list", "--account", "once@example.com"]);
    assert_eq!(keys.matches("reloaded").count(), 1, "{keys}");

    // Two tabs (or a double submit): both keys are created before either page is shown, and
    // each page still shows its own key's secret.
    let mut posted = Vec::new();
    for name in ["tab one", "tab two"] {
        let p = b
            .submit(
                "/settings/api-keys",
                "/settings/api-keys",
                &[("name", name)],
            )
            .await;
        assert_eq!(p.status, 303, "{}", p.text);
        posted.push(p.location().to_owned());
    }
    for to in &posted {
        let shown = b.get(to).await;
        assert!(
            shown.text.contains("id=\"new-key-secret\""),
            "{to}: {}",
            shown.text
        );
    }
}

#[tokio::test]
async fn key_names_with_control_characters_are_refused() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.log_in_new(&server, "ctl@example.com").await;
    for name in ["red\u{1b}[31m", "forged\nkey_x  sk-live  active", "c\rr"] {
        let p = b
            .submit(
                "/settings/api-keys",
                "/settings/api-keys",
                &[("name", name)],
            )
            .await;
        assert_eq!(p.status, 400, "{name:?}: {}", p.text);
        assert!(p.text.contains("control characters"), "{}", p.text);
    }
    let created = b.create_key(&[("name", "plain")]).await;
    let at = created.text.find("href=\"/settings/api-keys/key_").unwrap() + 6;
    let path = created.text[at..][..created.text[at..].find('"').unwrap()].to_owned();
    let p = b.submit(&path, &path, &[("name", "bell\u{7}")]).await;
    assert_eq!(p.status, 400, "{}", p.text);
    let list = server.cli(&["keys", "list", "--account", "ctl@example.com"]);
    assert_eq!(list.lines().count(), 1, "{list}");
    assert!(
        !list.chars().any(|c| c.is_control() && c != '\n'),
        "{list:?}"
    );
}

#[tokio::test]
async fn dashboard_errors_are_pages_not_plain_text() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.log_in_new(&server, "pages@example.com").await;
    let big = "x".repeat(2 << 20);
    let mut signed_out = Browser::new(&server);
    for path in [
        "/settings/api-keys/%ff",
        "/runs/%ff",
        "/models/%ff/x",
        "/no-such-page",
    ] {
        let p = b.get(path).await;
        assert_eq!(p.status, 404, "{path}: {}", p.text);
        assert!(p.text.contains("<html"), "{path}: {}", p.text);
        // Someone signed in is not offered to sign in (an error page reads no session, so it
        // shows the signed-in links without the account's address).
        assert!(!p.text.contains("href=\"/login\""), "{path}: {}", p.text);
        assert!(p.text.contains("href=\"/runs\""), "{path}: {}", p.text);
        assert!(!p.text.contains("pages@example.com"), "{path}: {}", p.text);
        assert!(!p.text.contains("/logout"), "{path}: {}", p.text);
        assert!(!p.text.contains("csrf_token"), "{path}: {}", p.text);
        let p = signed_out.get(path).await;
        assert!(
            p.status == 404 || p.location().starts_with("/login"),
            "{path}: {}",
            p.status
        );
        if p.status == 404 {
            assert!(p.text.contains("href=\"/login\""), "{path}: {}", p.text);
            assert!(!p.text.contains("href=\"/runs\""), "{path}: {}", p.text);
        }
    }
    // The cookie is not checked on an error page: a stale one gets the signed-in links (which
    // lead to /login), an empty one is no cookie; either name counts (`__Host-` behind TLS).
    for (cookie, signed_in_links) in [
        ("rb_session=stale", true),
        ("__Host-rb_session=stale", true),
        ("other=1; rb_session=stale", true),
        ("rb_session=", false),
        ("rb_session_x=1; x_rb_session=1", false),
    ] {
        let r = reqwest::Client::new()
            .get(format!("{}/no-such-page", server.url))
            .header("accept", "text/html")
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{cookie}");
        let text = r.text().await.unwrap();
        assert_eq!(
            text.contains("href=\"/runs\""),
            signed_in_links,
            "{cookie}: {text}"
        );
        assert_eq!(
            text.contains("href=\"/login\""),
            !signed_in_links,
            "{cookie}: {text}"
        );
    }
    for path in ["/settings/api-keys", "/login", "/settings/credits/grant"] {
        let p = b.post(path, &[("name", big.as_str())]).await;
        assert_eq!(p.status, 413, "{path}: {}", p.text);
        assert!(p.text.contains("<html"), "{path}: {}", p.text);
        assert!(p.text.contains("payload_too_large"), "{path}");
    }
    // Too many headers on a page: the error page too, not the API's envelope.
    let mut req = reqwest::Client::new()
        .get(format!("{}/models", server.url))
        .header("accept", "text/html");
    for i in 0..101 {
        req = req.header(format!("x-pad-{i}"), "y");
    }
    let r = req.send().await.unwrap();
    assert_eq!(r.status(), 431);
    let text = r.text().await.unwrap();
    assert!(text.contains("<html"), "{text}");
    assert!(text.contains("request_headers_too_large"), "{text}");
    // JSON callers get the envelope.
    let r = reqwest::Client::new()
        .post(format!("{}/login", server.url))
        .header("accept", "application/json")
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "payload_too_large");
}

/// Settings → Webhooks shows the account's signing secret (the CLI's) and rotates it with the
/// CSRF token; a run's page shows its delivery log, and "Redeliver" queues another delivery.
#[tokio::test]
async fn webhook_secret_rotation_and_the_delivery_log_on_the_run_page() {
    let server = Server::start();
    let mut b = Browser::new(&server);
    b.log_in_new(&server, "hooks@example.com").await;
    let page = b.get("/settings/webhooks").await;
    assert_eq!(page.status, 200, "{}", page.text);
    let cli = |rotate: bool| {
        let mut args = vec!["webhooks", "secret", "--account", "hooks@example.com"];
        if rotate {
            args.push("--rotate");
        }
        server.cli(&args).trim().to_owned()
    };
    let first = cli(false);
    assert!(page.text.contains(&first), "{}", page.text);
    assert!(!page.text.contains("webhook-overlap"));
    // Without the token nothing changes; with it, a new secret, the old one in its overlap.
    let p = b.post("/settings/webhooks/rotate", &[]).await;
    assert_eq!(p.status, 403);
    assert_eq!(cli(false), first);
    let p = b
        .submit("/settings/webhooks", "/settings/webhooks/rotate", &[])
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    assert_eq!(p.location(), "/settings/webhooks?rotated=1");
    let second = cli(false);
    assert_ne!(second, first);
    let page = b.get("/settings/webhooks?rotated=1").await;
    assert!(page.text.contains(&second));
    assert!(
        !page.text.contains(&first),
        "the old secret is not shown again"
    );
    assert!(page.text.contains("webhook-overlap"));

    // A run whose webhook is refused (a private address): its page shows the failed attempt.
    let key = server.key("hooks@example.com", &["--test"]);
    let c = server.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x"}, "webhook": "http://127.0.0.1:9/h"}),
        )
        .await;
    let id = r.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/v1/runs/{id}/deliveries");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while c.get(Some(&key), &path).await.body["data"][0]["status"] != "failed" {
        assert!(std::time::Instant::now() < deadline, "no failed delivery");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run_page = format!("/runs/{id}");
    let page = b.get(&run_page).await;
    assert!(page.text.contains("id=\"webhooks\""), "{}", page.text);
    assert!(page.text.contains("not a public address"));
    let p = b
        .submit(&run_page, &format!("/runs/{id}/redeliver"), &[])
        .await;
    assert_eq!(p.status, 303, "{}", p.text);
    assert_eq!(p.location(), format!("/runs/{id}?redelivered=1"));
    let log = c.get(Some(&key), &path).await.body;
    assert_eq!(log["data"].as_array().unwrap().len(), 2, "{log}");
    assert_eq!(log["data"][1]["event"], "completed");
    // Another account cannot redeliver it.
    let mut other = Browser::new(&server);
    other.log_in_new(&server, "other@example.com").await;
    let p = other
        .submit("/settings/webhooks", &format!("/runs/{id}/redeliver"), &[])
        .await;
    assert_eq!(p.status, 404, "{}", p.text);
}

/// The runs page shows the account's runs of both modes (an API key sees only its own mode's),
/// test runs with their badge, and filters by mode, alone or with the other filters.
#[tokio::test]
async fn the_runs_page_shows_both_modes_and_filters_by_mode() {
    let server = start(&[]);
    let mut b = Browser::new(&server);
    let email = "modes@example.com";
    b.log_in_new(&server, email).await;
    server.cli(&["credits", "add", "--account", email, "--cents", "100"]);
    let live = server.key(email, &[]);
    let test = server.key(email, &["--test"]);
    let api = server.client();
    let mut ids = Vec::new();
    for key in [&live, &test, &live, &test] {
        let r = api
            .create(
                key,
                json!({"model": "runbase/echo", "input": {"text": "m"}}),
            )
            .await;
        assert_eq!(r.status, 201, "{}", r.body);
        let id = r.body["id"].as_str().unwrap().to_owned();
        api.wait(key, &id).await;
        ids.push(id);
    }
    // The runs a page lists, in its order, by their index in `ids` (oldest first).
    let shown = |text: &str| -> Vec<usize> {
        let mut at: Vec<(usize, usize)> = ids
            .iter()
            .enumerate()
            .filter_map(|(i, id)| text.find(&format!("href=\"/runs/{id}\"")).map(|p| (p, i)))
            .collect();
        at.sort();
        at.into_iter().map(|(_, i)| i).collect()
    };
    let all = b.get("/runs").await;
    assert_eq!(all.status, 200);
    assert_eq!(shown(&all.text), [3, 2, 1, 0]);
    assert_eq!(all.text.matches("badge test").count(), 2, "{}", all.text);
    for (query, expected) in [
        ("mode=live", &[2, 0][..]),
        ("mode=test", &[3, 1]),
        ("mode=", &[3, 2, 1, 0]),
        ("mode=test&status=succeeded", &[3, 1]),
        ("mode=live&model=runbase%2Fecho", &[2, 0]),
        ("mode=live&status=failed", &[]),
        // From a cursor of the mode.
        (&format!("mode=test&after={}", ids[3]), &[1]),
    ] {
        let page = b.get(&format!("/runs?{query}")).await;
        assert_eq!(page.status, 200, "{query}");
        assert_eq!(shown(&page.text), expected, "{query}");
    }
    let bad = b.get("/runs?mode=staging").await;
    assert_eq!(bad.status, 400);
}

/// A filtered runs page reads at most a window of the account's runs (2,000), so a filter few
/// runs pass does not read them all; when the window ends before the account's runs do, the page
/// says so and its "Older" link goes on from the window's last run.
#[tokio::test]
async fn a_filtered_runs_page_reads_a_window_and_goes_on_from_it() {
    let server = start(&[
        (
            "RUNBASE_RATE_LIMITS__RUNS__REQUESTS".into(),
            "100000".into(),
        ),
        ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP".into(), "64".into()),
    ]);
    let mut b = Browser::new(&server);
    let email = "window@example.com";
    b.log_in_new(&server, email).await;
    server.cli(&["credits", "add", "--account", email, "--cents", "3000"]);
    let key = server.key(email, &[]);
    let api = server.client();
    let image = api
        .create(
            &key,
            json!({"model": "runbase/placeholder-image", "input": {"prompt": "a fox"}}),
        )
        .await;
    assert_eq!(image.status, 201, "{}", image.body);
    let image_id = image.body["id"].as_str().unwrap().to_owned();
    // A window's worth of newer runs of another model.
    let mut creates = tokio::task::JoinSet::new();
    for i in 0..2_000 {
        let (api, key) = (api.clone(), key.clone());
        creates.spawn(async move {
            let r = api
                .create(
                    &key,
                    json!({"model": "runbase/echo", "input": {"text": format!("t{i}")}}),
                )
                .await;
            assert_eq!(r.status, 201, "{}", r.body);
        });
        if creates.len() >= 16 {
            creates.join_next().await.unwrap().unwrap();
        }
    }
    while let Some(done) = creates.join_next().await {
        done.unwrap();
    }
    let older_link = |text: &str| {
        let at = text.find("href=\"/runs?after=")?;
        let rest = &text[at + "href=\"".len()..];
        Some(rest[..rest.find('"').unwrap()].replace("&amp;", "&"))
    };

    let first = b.get("/runs?model=runbase%2Fplaceholder-image").await;
    assert_eq!(first.status, 200);
    assert!(!first.text.contains(&image_id), "older than the window");
    assert!(first.text.contains("id=\"runs-window\""), "{}", first.text);
    assert!(
        !first.text.contains("No runs match"),
        "the window is not the end"
    );
    let next = older_link(&first.text).expect("a link to search older runs");
    assert!(next.contains("model=runbase%2Fplaceholder-image"), "{next}");
    let second = b.get(&next).await;
    assert_eq!(second.status, 200);
    assert!(second.text.contains(&image_id), "{}", second.text);
    assert!(
        !second.text.contains("id=\"runs-window\""),
        "the account's runs end here"
    );
    assert_eq!(older_link(&second.text), None);

    // Exactly a window's worth left after the cursor: all of it read, so no note and no link
    // to an empty page.
    let newest = api.get(Some(&key), "/api/v1/runs?limit=1").await;
    let newest = newest.body["data"][0]["id"].as_str().unwrap().to_owned();
    let exact = b
        .get(&format!(
            "/runs?model=runbase%2Fplaceholder-image&after={newest}"
        ))
        .await;
    assert_eq!(exact.status, 200);
    assert!(exact.text.contains(&image_id));
    assert!(!exact.text.contains("id=\"runs-window\""));
    assert_eq!(older_link(&exact.text), None);

    // A filter that many runs pass pages by its matches, as before.
    let echo = b.get("/runs?model=runbase%2Fecho").await;
    assert_eq!(echo.status, 200);
    assert_eq!(echo.text.matches("href=\"/runs/run_").count(), 25);
    assert!(!echo.text.contains("id=\"runs-window\""));
    assert!(older_link(&echo.text).is_some());
    // Unfiltered, nothing is windowed.
    let all = b.get("/runs").await;
    assert!(!all.text.contains("id=\"runs-window\""));
    // A model that is not the catalogue's is refused, not looked for (PostgreSQL refused the
    // NUL with a 500 before).
    for model in ["%00", "a%00b", "runbase%2Fnone"] {
        let p = b.get(&format!("/runs?model={model}")).await;
        assert_eq!(p.status, 400, "{model}: {}", p.text);
        assert!(p.text.contains("invalid_request"), "{model}");
    }
}

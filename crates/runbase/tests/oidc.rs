//! Sign-in with OpenID Connect against a real provider: `oidc-provider` from npm (the reference
//! implementation), started by `e2e/oidc-provider.mjs` on 127.0.0.1. A cookie-keeping client
//! that follows no redirect by itself plays the browser, hop by hop, through Runbase's start,
//! the provider's authorization and interaction endpoints, and Runbase's callback.
//!
//! `scripts/test` installs the npm packages. Without them the tests skip with a message, or
//! fail under `CI=true`.

mod common;

use common::Server;
use reqwest::StatusCode;
use serde_json::Value;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::Duration;

const CLIENT_ID: &str = "runbase-test";
const CLIENT_SECRET: &str = "s3cret:with/odd&chars";

fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../e2e")
}

/// The local provider; killed when dropped.
struct Idp {
    url: String,
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Idp {
    /// Starts the provider, or `None` (the test skips) without Node or the npm packages.
    fn start() -> Option<Idp> {
        let dir = e2e_dir();
        let installed = dir.join("node_modules/oidc-provider/package.json").exists();
        let node = Command::new("node").arg("--version").output().is_ok();
        if !installed || !node {
            let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(
                !ci,
                "oidc-provider is not installed in e2e/node_modules (run scripts/test)"
            );
            eprintln!("skipped: oidc-provider is not installed (npm ci --prefix e2e)");
            return None;
        }
        let mut child = Command::new("node")
            .arg("oidc-provider.mjs")
            .current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start node");
        let stdin = child.stdin.take().expect("stdin");
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let line = read_line(&mut stdout);
        let url = line
            .strip_prefix("OIDC_PROVIDER_URL=")
            .unwrap_or_else(|| panic!("provider said {line:?}"))
            .to_owned();
        Some(Idp {
            url,
            child,
            stdin,
            stdout,
        })
    }

    /// Registers Runbase's client (its redirect URI is known once Runbase runs).
    fn register(&mut self, runbase: &Server) {
        writeln!(
            self.stdin,
            "CLIENT {CLIENT_ID} {CLIENT_SECRET} {}/auth/oidc/local/callback",
            runbase.url
        )
        .expect("write to provider");
        assert_eq!(read_line(&mut self.stdout), "READY");
    }

    /// The user the provider's next login signs in.
    async fn user(&self, sub: &str, email: &str, verified: bool) {
        let url = format!(
            "{}/__test/user?sub={sub}&email={email}&email_verified={verified}",
            self.url
        );
        let r = reqwest::get(url).await.expect("provider");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }

    async fn id_token(&self, ttl_secs: u64, delay_ms: u64) {
        let url = format!(
            "{}/__test/id_token?ttl={ttl_secs}&delay_ms={delay_ms}",
            self.url
        );
        let r = reqwest::get(url).await.expect("provider");
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
    }
}

fn read_line(r: &mut impl BufRead) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("read from provider");
    line.trim().to_owned()
}

/// The provider and a Runbase configured with it (issuer, client id from the environment, the
/// secret through its `RUNBASE_AUTH__OIDC__…` override).
fn setup(extra: &[(&str, &str)]) -> Option<(Idp, Server)> {
    let mut idp = Idp::start()?;
    let mut env = common::relaxed();
    env.extend([
        ("RUNBASE_AUTH__OIDC__LOCAL__ISSUER", idp.url.as_str()),
        ("RUNBASE_AUTH__OIDC__LOCAL__CLIENT_ID", CLIENT_ID),
        ("RUNBASE_AUTH__OIDC__LOCAL__CLIENT_SECRET", CLIENT_SECRET),
        ("RUNBASE_AUTH__OIDC__LOCAL__DISPLAY_NAME", "Local IdP"),
        ("RUNBASE_RATE_LIMITS__SESSION__REQUESTS", "1000"),
    ]);
    if !extra
        .iter()
        .any(|(k, _)| *k == "RUNBASE_RATE_LIMITS__AUTH__REQUESTS")
    {
        env.push(("RUNBASE_RATE_LIMITS__AUTH__REQUESTS", "1000"));
    }
    env.extend_from_slice(extra);
    let server = Server::start_with(&env);
    idp.register(&server);
    Some((idp, server))
}

/// A browser: keeps cookies, follows no redirect by itself.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// From Runbase's start through the provider, hop by hop, until the provider sends the browser
/// back: returns that callback URL, not yet visited.
async fn to_callback(b: &reqwest::Client, server: &Server) -> String {
    let callback = format!("{}/auth/oidc/local/callback", server.url);
    let mut url = format!("{}/auth/oidc/local/start", server.url);
    for _ in 0..12 {
        let r = b.get(&url).send().await.expect("hop");
        assert!(
            r.status().is_redirection(),
            "{url}: {} {}",
            r.status(),
            r.text().await.unwrap_or_default()
        );
        let location = r.headers()["location"].to_str().expect("location");
        let next = reqwest::Url::parse(&url)
            .and_then(|u| u.join(location))
            .expect("location URL")
            .to_string();
        if next.starts_with(&callback) {
            return next;
        }
        url = next;
    }
    panic!("the flow never came back to {callback}");
}

/// Visits the callback asking for JSON (errors come as the envelope).
async fn visit(b: &reqwest::Client, url: &str) -> (StatusCode, Value, Option<String>) {
    let r = b
        .get(url)
        .header("accept", "application/json")
        .send()
        .await
        .expect("callback");
    let status = r.status();
    let location = r
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap_or("").to_owned());
    let body = r.json().await.unwrap_or(Value::Null);
    (status, body, location)
}

/// Who the browser is logged in as (`GET /auth/session`), or `None`.
async fn whoami(b: &reqwest::Client, server: &Server) -> Option<Value> {
    let r = b
        .get(format!("{}/auth/session", server.url))
        .header("accept", "application/json")
        .send()
        .await
        .expect("session");
    (r.status() == StatusCode::OK).then_some(())?;
    Some(r.json::<Value>().await.expect("json")["account"].clone())
}

fn assert_refused(got: &(StatusCode, Value, Option<String>), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{got:?}");
    assert_eq!(got.1["error"]["code"], code, "{got:?}");
}

fn accounts(server: &Server) -> String {
    server.cli(&["accounts", "list"])
}

#[tokio::test]
async fn a_new_user_gets_an_account_and_signs_in_again_to_it() {
    let Some((idp, server)) = setup(&[("RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS", "500")]) else {
        return;
    };
    // The button is on both pages.
    for page in ["login", "signup"] {
        let html = reqwest::get(format!("{}/{page}", server.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            html.contains("Sign in with Local IdP")
                && html.contains("href=\"/auth/oidc/local/start\""),
            "{page}: {html}"
        );
    }
    // In the visitor's language, like the rest of the page.
    let german = reqwest::Client::new()
        .get(format!("{}/login", server.url))
        .header("accept-language", "de")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        german.contains("Anmelden mit Local IdP") && !german.contains("Sign in with"),
        "{german}"
    );
    idp.user("alice-sub", "Alice@Example.com", true).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    let (status, _, location) = visit(&b, &url).await;
    assert_eq!(status, StatusCode::SEE_OTHER);
    assert_eq!(location.as_deref(), Some("/"));
    let me = whoami(&b, &server).await.expect("a session");
    assert_eq!(me["email"], "alice@example.com");
    // The welcome credit, as for any sign-up: $5.00 in micro-USD.
    assert_eq!(me["balanceUsd"], 5_000_000, "{me}");
    // The session opens the pages.
    let keys = b
        .get(format!("{}/settings/api-keys", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(keys.status(), StatusCode::OK);

    // Another browser, the same identity: the same account, no second one.
    let b2 = browser();
    let url = to_callback(&b2, &server).await;
    assert_eq!(visit(&b2, &url).await.0, StatusCode::SEE_OTHER);
    assert_eq!(whoami(&b2, &server).await.expect("session")["id"], me["id"]);
    assert_eq!(accounts(&server).matches("alice@example.com").count(), 1);
    // Granted once: signing in again is not signing up.
    assert_eq!(
        whoami(&b2, &server).await.expect("session")["balanceUsd"],
        5_000_000
    );

    // An unknown provider name is a missing page.
    let r = b
        .get(format!("{}/auth/oidc/nope/start", server.url))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_verified_email_links_the_existing_account() {
    let Some((idp, server)) = setup(&[]) else {
        return;
    };
    server.account("bob@example.com", 0);
    let listed = accounts(&server);
    idp.user("bob-sub", "bob@example.com", true).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    assert_eq!(visit(&b, &url).await.0, StatusCode::SEE_OTHER);
    let me = whoami(&b, &server).await.expect("session");
    assert_eq!(me["email"], "bob@example.com");
    assert!(
        listed.contains(me["id"].as_str().unwrap()),
        "{me} in {listed}"
    );
    assert_eq!(accounts(&server), listed, "no account was made");
}

#[tokio::test]
async fn an_unverified_email_neither_links_nor_creates() {
    let Some((idp, server)) = setup(&[]) else {
        return;
    };
    server.account("dave@example.com", 0);
    let before = accounts(&server);
    for email in ["carol@example.com", "dave@example.com"] {
        idp.user(&format!("{email}-sub"), email, false).await;
        let b = browser();
        let url = to_callback(&b, &server).await;
        let got = visit(&b, &url).await;
        assert_refused(&got, 403, "email_not_verified");
        assert!(
            got.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("not verified"),
            "{got:?}"
        );
        assert!(whoami(&b, &server).await.is_none(), "{email}: no session");
    }
    assert_eq!(accounts(&server), before, "no account made or changed");
    // The page a browser sees says so too.
    idp.user("carol-sub", "carol@example.com", false).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    let r = b.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r.text().await.unwrap().contains("has not verified"));
}

#[tokio::test]
async fn a_wrong_missing_or_foreign_state_is_refused() {
    let Some((idp, server)) = setup(&[]) else {
        return;
    };
    idp.user("erin-sub", "erin@example.com", true).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    let parsed = reqwest::Url::parse(&url).unwrap();
    let pairs: Vec<(String, String)> = parsed
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let with = |state: Option<&str>| {
        let mut u = parsed.clone();
        u.query_pairs_mut().clear();
        for (k, v) in &pairs {
            if k != "state" {
                u.query_pairs_mut().append_pair(k, v);
            }
        }
        if let Some(s) = state {
            u.query_pairs_mut().append_pair("state", s);
        }
        u.to_string()
    };
    assert_refused(
        &visit(&b, &with(Some("not-the-state"))).await,
        400,
        "sign_in_failed",
    );
    assert_refused(&visit(&b, &with(None)).await, 400, "sign_in_failed");
    assert!(whoami(&b, &server).await.is_none());

    // The right state from another browser (no binding cookie) is refused, and spent.
    let other = browser();
    assert_refused(&visit(&other, &url).await, 400, "sign_in_failed");
    assert!(whoami(&other, &server).await.is_none());
    assert_refused(&visit(&b, &url).await, 400, "sign_in_failed");
    assert!(whoami(&b, &server).await.is_none());
    // An answer naming another issuer (RFC 9207 `iss`, a mix-up) is refused.
    let mut forged = reqwest::Url::parse(&to_callback(&b, &server).await).unwrap();
    assert!(
        forged
            .query_pairs()
            .any(|(k, v)| k == "iss" && v == idp.url)
    );
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "iss" {
                "https://evil.example".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);
    assert_refused(&visit(&b, forged.as_str()).await, 400, "sign_in_failed");
    assert!(whoami(&b, &server).await.is_none());
    assert!(
        !accounts(&server).contains("erin@example.com"),
        "no account was made"
    );
}

#[tokio::test]
async fn a_replayed_code_is_refused() {
    let Some((idp, server)) = setup(&[]) else {
        return;
    };
    idp.user("frank-sub", "frank@example.com", true).await;
    let b = browser();
    let first = to_callback(&b, &server).await;
    assert_eq!(visit(&b, &first).await.0, StatusCode::SEE_OTHER);

    // The very same callback again: its state is spent.
    let attacker = browser();
    assert_refused(&visit(&b, &first).await, 400, "sign_in_failed");

    // The used code under a fresh, valid state: the provider refuses it, and the browser gets
    // a clean error, not a session.
    let code = reqwest::Url::parse(&first)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let mut second = reqwest::Url::parse(&to_callback(&attacker, &server).await).unwrap();
    let pairs: Vec<(String, String)> = second
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" {
                code.clone()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    second.query_pairs_mut().clear().extend_pairs(pairs);
    let got = visit(&attacker, second.as_str()).await;
    assert_refused(&got, 400, "sign_in_failed");
    assert!(whoami(&attacker, &server).await.is_none());
    assert!(
        server.log().contains("invalid_grant"),
        "the provider refused it: {}",
        server.log()
    );
}

#[tokio::test]
async fn an_expired_id_token_is_refused() {
    // No clock skew allowed; the provider's ID token lives 1 s and reaches Runbase 2.5 s after
    // it was minted.
    let Some((idp, server)) = setup(&[("RUNBASE_AUTH__OIDC_CLOCK_SKEW_SECS", "0")]) else {
        return;
    };
    idp.user("gina-sub", "gina@example.com", true).await;
    idp.id_token(1, 2500).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    let got = visit(&b, &url).await;
    assert_refused(&got, 400, "sign_in_failed");
    assert!(
        got.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired"),
        "{got:?}"
    );
    assert!(whoami(&b, &server).await.is_none());
    assert!(!accounts(&server).contains("gina@example.com"));

    // The same provider with a token that lives: signed in.
    idp.id_token(600, 0).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    assert_eq!(visit(&b, &url).await.0, StatusCode::SEE_OTHER);
    assert_eq!(
        whoami(&b, &server).await.expect("session")["email"],
        "gina@example.com"
    );
}

/// A password account's address, though the provider says it is verified, is not linked: whoever
/// made the password account never proved the address, and linking would keep their way in
/// (pre-account hijacking). Refused, with no session and nothing linked.
#[tokio::test]
async fn a_verified_email_does_not_link_an_account_that_has_a_password() {
    let Some((idp, server)) = setup(&[]) else {
        return;
    };
    let mut create = server.cli_command(&[
        "accounts",
        "create",
        "carol@example.com",
        "--password-stdin",
    ]);
    create.stdin(std::process::Stdio::piped());
    let mut child = create.spawn().unwrap();
    {
        use std::io::Write as _;
        let mut stdin = child.stdin.take().unwrap();
        writeln!(stdin, "a-password-carol-chose").unwrap();
    }
    assert!(child.wait().unwrap().success());
    let listed = accounts(&server);
    idp.user("carol-sub", "carol@example.com", true).await;
    let b = browser();
    let url = to_callback(&b, &server).await;
    let got = visit(&b, &url).await;
    assert_refused(&got, 400, "sign_in_failed");
    assert!(whoami(&b, &server).await.is_none(), "no session");
    assert_eq!(accounts(&server), listed, "no account was made");
    // A second try is refused the same way: nothing was linked by the first.
    let url = to_callback(&b, &server).await;
    assert_refused(&visit(&b, &url).await, 400, "sign_in_failed");
}

/// Starting a sign-in counts against the per-address auth limit, like a log-in: each start
/// writes a pending sign-in, so an anonymous flood of them is refused early.
#[tokio::test]
async fn starting_sign_ins_is_rate_limited_per_address() {
    let Some((_idp, server)) = setup(&[("RUNBASE_RATE_LIMITS__AUTH__REQUESTS", "3")]) else {
        return;
    };
    let b = browser();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let r = b
            .get(format!("{}/auth/oidc/local/start", server.url))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
        if r.status() == StatusCode::TOO_MANY_REQUESTS {
            assert!(r.headers().contains_key("retry-after"));
        }
    }
    assert_eq!(statuses, [302, 302, 302, 429, 429], "{statuses:?}");
}

//! The welcome credit (`[accounts] signup_credit_cents`): granted once, in the transaction that
//! creates the account, with a ledger line of its own, whether the account comes from the
//! dashboard's sign-up or the CLI; nothing (and no ledger line) by default; never again after a
//! restart. Runs on PostgreSQL too (`RUNBASE_TEST_DATABASE=postgres`).

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;

use common::{Server, cents};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

const CREDIT: (&str, &str) = ("RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS", "250");

/// An administrative command with the server's configuration (the welcome credit included,
/// as `--config` would give it).
fn cli(s: &Server, args: &[&str]) -> std::process::Output {
    s.cli_command(args)
        .env(CREDIT.0, CREDIT.1)
        .output()
        .unwrap()
}

fn create(s: &Server, args: &[&str]) {
    let out = cli(s, args);
    assert!(out.status.success(), "{args:?}: {out:?}");
}

/// `credits show --json`: the balance in cents and the ledger lines.
fn credits(s: &Server, email: &str) -> (Value, Vec<Value>) {
    let out = s.cli(&["credits", "show", "--account", email, "--json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    (
        cents(&v["balanceUsd"]),
        v["ledger"].as_array().unwrap().clone(),
    )
}

fn assert_welcomed(s: &Server, email: &str, expected_cents: i64) {
    let (balance, ledger) = credits(s, email);
    assert_eq!(balance, json!(expected_cents), "{email}");
    assert_eq!(ledger.len(), 1, "one line: {ledger:?}");
    assert_eq!(ledger[0]["memo"], "welcome credit");
    assert_eq!(ledger[0]["kind"], "topup");
    assert_eq!(cents(&ledger[0]["amountUsd"]), json!(expected_cents));
    assert_eq!(cents(&ledger[0]["balanceAfterUsd"]), json!(expected_cents));
    assert_eq!(ledger[0]["runId"], Value::Null);
}

/// Signs up through the dashboard's form, as a browser without JavaScript would.
async fn sign_up(s: &Server, email: &str) {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http
        .get(format!("{}/signup", s.url))
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let cookie = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|c| c.starts_with("rb_csrf="))
        .unwrap();
    let cookie = cookie.split(';').next().unwrap().to_owned();
    let text = page.text().await.unwrap();
    let marker = r#"name="csrf_token" value=""#;
    let rest = &text[text.find(marker).unwrap() + marker.len()..];
    let token = &rest[..rest.find('"').unwrap()];
    let r = http
        .post(format!("{}/signup", s.url))
        .header("cookie", cookie)
        .form(&[
            ("email", email),
            ("password", PASSWORD),
            ("csrf_token", token),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
}

#[tokio::test]
async fn every_new_account_gets_the_welcome_credit_once() {
    let mut env = common::relaxed();
    env.push(CREDIT);
    let s = Server::start_with(&env);

    // The CLI, with and without a password, and as an administrator.
    create(&s, &["accounts", "create", "cli@example.com"]);
    assert_welcomed(&s, "cli@example.com", 250);
    let mut child = s
        .cli_command(&["accounts", "create", "pw@example.com", "--password-stdin"])
        .env(CREDIT.0, CREDIT.1)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(
        &mut child.stdin.take().unwrap(),
        format!("{PASSWORD}\n").as_bytes(),
    )
    .unwrap();
    assert!(child.wait().unwrap().success());
    assert_welcomed(&s, "pw@example.com", 250);
    create(&s, &["accounts", "create", "admin@example.com", "--admin"]);
    assert_welcomed(&s, "admin@example.com", 250);

    // The dashboard's sign-up.
    sign_up(&s, "web@example.com").await;
    assert_welcomed(&s, "web@example.com", 250);
    // Signing up again with the same email (answered the same) grants nothing more.
    sign_up(&s, "web@example.com").await;
    assert_welcomed(&s, "web@example.com", 250);
    // Nor does creating it again with the CLI, which is refused.
    assert!(
        !cli(&s, &["accounts", "create", "cli@example.com"])
            .status
            .success()
    );
    assert_welcomed(&s, "cli@example.com", 250);

    // The credit is real money: a key of the account sees it and can spend it.
    let key = s.key("web@example.com", &[]);
    let c = s.client();
    assert_eq!(c.balance(&key).await, json!(250));
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "thanks"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(c.balance(&key).await, json!(249));

    // A restart grants nothing again.
    let s = s.restart();
    assert_welcomed(&s, "cli@example.com", 250);
    assert_welcomed(&s, "pw@example.com", 250);
    let (balance, ledger) = credits(&s, "web@example.com");
    assert_eq!(balance, json!(249));
    let welcomes = ledger
        .iter()
        .filter(|l| l["memo"] == "welcome credit")
        .count();
    assert_eq!(welcomes, 1, "{ledger:?}");
}

#[tokio::test]
async fn no_welcome_credit_by_default() {
    let s = Server::start();
    s.cli(&["accounts", "create", "plain@example.com"]);
    sign_up(&s, "web@example.com").await;
    for email in ["plain@example.com", "web@example.com"] {
        let (balance, ledger) = credits(&s, email);
        assert_eq!(balance, json!(0));
        assert!(ledger.is_empty(), "no ledger line: {ledger:?}");
    }
}

#[test]
fn the_welcome_credit_is_bounded() {
    for bad in ["-1", "1000000001", "lots"] {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new(common::BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path())
            .env("RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS", bad)
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        assert!(!out.status.success(), "{bad}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(err.contains("signup_credit_cents"), "{bad}: {err}");
    }
    // The CLI checks it too, before creating anything.
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .args(["accounts", "create", "x@example.com", "--data-dir"])
        .arg(dir.path())
        .env("RUNBASE_ACCOUNTS__SIGNUP_CREDIT_CENTS", "-5")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("signup_credit_cents"));
}

//! Money under concurrency: hundreds of simultaneous creates from many connections never take a
//! balance below zero, never pass a key's spend limit or quota, and leave a ledger that sums to
//! the balance.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{Client, Server};
use serde_json::{Value, json};
use std::collections::HashMap;

/// Fires `n` creates at once, each on its own connection; returns the count of each status/code.
async fn burst(
    s: &Server,
    key: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
) -> HashMap<String, usize> {
    burst_over(&[s], key, n, body).await
}

/// [`burst`], the requests spread over several servers in turn.
async fn burst_over(
    servers: &[&Server],
    key: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
) -> HashMap<String, usize> {
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let s = servers[i % servers.len()];
        // A client per request: no connection reuse, so the server sees n connections.
        let c = Client {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(0)
                .build()
                .unwrap(),
            base: s.url.clone(),
        };
        let (key, body) = (key.to_owned(), body(i));
        tasks.push(tokio::spawn(async move { c.create(&key, body).await }));
    }
    let mut counts = HashMap::new();
    for t in tasks {
        let r = t.await.unwrap();
        let label = if r.status == 201 {
            "201".to_owned()
        } else {
            format!(
                "{} {}",
                r.status,
                r.body["error"]["code"].as_str().unwrap_or("?")
            )
        };
        *counts.entry(label).or_default() += 1;
    }
    counts
}

fn ledger(s: &Server, email: &str) -> Value {
    serde_json::from_str(&s.cli(&[
        "credits",
        "show",
        "--account",
        email,
        "--json",
        "--limit",
        "100000",
    ]))
    .unwrap()
}

/// The ledger sums to the balance, no running balance is negative, and every run is charged
/// once and refunded at most once.
fn assert_ledger_exact(l: &Value) {
    let entries = l["ledger"].as_array().unwrap();
    let mut sum = 0i64;
    let mut charges: HashMap<&str, usize> = HashMap::new();
    let mut refunds: HashMap<&str, usize> = HashMap::new();
    for e in entries {
        sum += e["amountUsd"].as_i64().unwrap();
        assert!(e["balanceAfterUsd"].as_i64().unwrap() >= 0, "{e}");
        match e["kind"].as_str().unwrap() {
            "run_charge" => *charges.entry(e["runId"].as_str().unwrap()).or_default() += 1,
            "run_refund" => *refunds.entry(e["runId"].as_str().unwrap()).or_default() += 1,
            _ => {}
        }
    }
    assert_eq!(
        sum,
        l["balanceUsd"].as_i64().unwrap(),
        "the ledger sums to the balance"
    );
    assert!(charges.values().all(|&n| n == 1));
    assert!(
        refunds
            .iter()
            .all(|(run, &n)| n == 1 && charges.contains_key(run))
    );
}

async fn wait_all(c: &Client, key: &str) -> Vec<Value> {
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let path = match &after {
            Some(a) => format!("/api/v1/runs?limit=100&starting_after={a}"),
            None => "/api/v1/runs?limit=100".to_owned(),
        };
        let page = c.get(Some(key), &path).await;
        let data = page.body["data"].as_array().unwrap().clone();
        after = data.last().map(|r| r["id"].as_str().unwrap().to_owned());
        all.extend(data);
        if page.body["hasMore"] != true {
            break;
        }
    }
    for r in &mut all {
        if r["status"] != "succeeded" && r["status"] != "failed" {
            *r = c.wait(key, r["id"].as_str().unwrap()).await;
        }
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn spend_limit_holds_under_a_burst() {
    let s = Server::start();
    s.account("burst@example.com", 400);
    let key = s.key("burst@example.com", &["--spend-limit-cents", "250"]);
    let counts = burst(
        &s,
        &key,
        520,
        |i| json!({"model": "runbase/echo", "input": {"text": format!("{i}")}}),
    )
    .await;
    assert_eq!(counts.get("201"), Some(&250), "{counts:?}");
    assert_eq!(
        counts.get("403 api_key_spend_limit_exceeded"),
        Some(&270),
        "{counts:?}"
    );
    let c = s.client();
    let acct = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(acct.body["key"]["spentUsd"], 250 * 10_000);
    assert_eq!(acct.body["balanceUsd"], 150 * 10_000);
    assert_eq!(wait_all(&c, &key).await.len(), 250);
    let l = ledger(&s, "burst@example.com");
    assert_eq!(l["balanceUsd"], 150 * 10_000);
    assert_ledger_exact(&l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn balance_and_quota_hold_under_a_burst() {
    let s = Server::start();
    s.account("poor@example.com", 180);
    let key = s.key("poor@example.com", &[]);
    let counts = burst(
        &s,
        &key,
        500,
        |_| json!({"model": "runbase/echo", "input": {"text": "x"}}),
    )
    .await;
    assert_eq!(counts.get("201"), Some(&180), "{counts:?}");
    assert_eq!(
        counts.get("402 insufficient_balance"),
        Some(&320),
        "{counts:?}"
    );
    let l = ledger(&s, "poor@example.com");
    assert_eq!(l["balanceUsd"], 0);
    assert_ledger_exact(&l);

    s.cli(&[
        "credits",
        "add",
        "--account",
        "poor@example.com",
        "--cents",
        "1000",
    ]);
    let quota_key = s.key("poor@example.com", &["--quota", "77"]);
    let counts = burst(
        &s,
        &quota_key,
        500,
        |_| json!({"model": "runbase/echo", "input": {"text": "x"}}),
    )
    .await;
    assert_eq!(counts.get("201"), Some(&77), "{counts:?}");
    assert_eq!(counts.get("429 USAGE_EXCEEDED"), Some(&423), "{counts:?}");
    let l = ledger(&s, "poor@example.com");
    assert_eq!(l["balanceUsd"], (1000 - 77) * 10_000);
    assert_ledger_exact(&l);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refunds_racing_with_creates_keep_the_books_exact() {
    let s = Server::start();
    s.account("mixed@example.com", 300);
    let key = s.key("mixed@example.com", &["--spend-limit-cents", "200"]);
    let c = s.client();
    // Two waves; half of each fails (and is refunded) while the next creates are arriving.
    let mut created = 0;
    for wave in 0..2 {
        let counts = burst(&s, &key, 300, |i| {
            if i % 2 == 0 {
                json!({"model": "runbase/echo", "input": {"text": "ok", "delay_ms": (i % 7) * 5}})
            } else {
                json!({"model": "runbase/echo", "input": {"text": "bad", "fail": format!("wave {wave}"), "delay_ms": (i % 5) * 3}})
            }
        })
        .await;
        created += counts.get("201").copied().unwrap_or(0);
        for label in counts.keys() {
            assert!(
                label == "201" || label == "403 api_key_spend_limit_exceeded",
                "{counts:?}"
            );
        }
        let acct = c.get(Some(&key), "/api/v1/account").await;
        assert!(
            acct.body["key"]["spentUsd"].as_i64().unwrap() <= 200 * 10_000,
            "{}",
            acct.body
        );
    }
    let runs = wait_all(&c, &key).await;
    assert_eq!(runs.len(), created);
    let succeeded = runs.iter().filter(|r| r["status"] == "succeeded").count() as i64;
    let failed = runs.iter().filter(|r| r["status"] == "failed").count() as i64;
    assert_eq!(succeeded + failed, created as i64);
    assert!(failed > 0 && succeeded > 0);
    // Only successful runs cost anything, and the key's spend is exactly that.
    let acct = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(acct.body["balanceUsd"], (300 - succeeded) * 10_000);
    assert_eq!(acct.body["key"]["spentUsd"], succeeded * 10_000);
    let l = ledger(&s, "mixed@example.com");
    assert_ledger_exact(&l);
    let refunds = l["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "run_refund")
        .count() as i64;
    assert_eq!(refunds, failed);
}

/// Two server processes on one PostgreSQL database, the creates spread over both: the spend
/// limit and the balance admit exactly what they allow, and the books balance.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_on_one_postgres_database_keep_the_books_exact() {
    let Some(db) = runbase_store_postgres::testing::TestDatabase::create() else {
        return;
    };
    let migrated = std::process::Command::new(common::BIN)
        .arg("migrate")
        .env("RUNBASE_DATABASE_URL", &db.url)
        .output()
        .unwrap();
    assert!(migrated.status.success(), "{migrated:?}");
    let mut env = common::relaxed();
    env.push(("RUNBASE_DATABASE_URL", db.url.as_str()));
    let (a, b) = (Server::start_with(&env), Server::start_with(&env));
    a.account("two@example.com", 300);
    let limited = a.key("two@example.com", &["--spend-limit-cents", "200"]);
    let echo = |i: usize| json!({"model": "runbase/echo", "input": {"text": format!("{i}")}});
    let counts = burst_over(&[&a, &b], &limited, 400, echo).await;
    assert_eq!(counts.get("201"), Some(&200), "{counts:?}");
    assert_eq!(
        counts.get("403 api_key_spend_limit_exceeded"),
        Some(&200),
        "{counts:?}"
    );
    let free = b.key("two@example.com", &[]);
    let counts = burst_over(&[&a, &b], &free, 300, echo).await;
    assert_eq!(counts.get("201"), Some(&100), "{counts:?}");
    assert_eq!(
        counts.get("402 insufficient_balance"),
        Some(&200),
        "{counts:?}"
    );

    // The account's runs, whichever key created them: every one finishes, on either worker.
    let runs = wait_all(&a.client(), &limited).await;
    assert_eq!(runs.len(), 300);
    assert!(runs.iter().all(|r| r["status"] == "succeeded"));
    let l = ledger(&b, "two@example.com");
    assert_eq!(l["balanceUsd"], 0);
    assert_ledger_exact(&l);
    drop((a, b));
}

//! Key states, IP allowlists, spend limits, quotas and rate limits, over HTTP, with changes
//! made by the CLI while the server runs.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::Server;
use serde_json::{Value, json};
use std::time::Duration;

fn echo() -> Value {
    json!({"model": "runbase/echo", "input": {"text": "hi"}})
}

fn key_id(s: &Server, email: &str, prefix: &str) -> String {
    let list = s.cli(&["keys", "list", "--account", email]);
    list.lines()
        .find(|l| l.contains(prefix))
        .and_then(|l| l.split_whitespace().next())
        .unwrap_or_else(|| panic!("no key {prefix} in {list}"))
        .to_owned()
}

#[tokio::test]
async fn disabled_deleted_and_expired_keys_are_refused_at_once() {
    let s = Server::start();
    let key = s.account("states@example.com", 100);
    let c = s.client();
    assert_eq!(c.create(&key, echo()).await.status, 201);

    // Disable by the full key, then enable by id: each takes effect on the very next request.
    s.cli(&["keys", "disable", &key]);
    c.create(&key, echo())
        .await
        .assert_error(401, "invalid_api_key");
    c.get(Some(&key), "/api/v1/runs")
        .await
        .assert_error(401, "invalid_api_key");
    let id = key_id(&s, "states@example.com", &key[..11]);
    assert!(
        s.cli(&["keys", "list", "--account", "states@example.com"])
            .contains("disabled")
    );
    s.cli(&["keys", "enable", &id]);
    assert_eq!(c.create(&key, echo()).await.status, 201);

    // Deleted.
    s.cli(&["keys", "delete", &id]);
    c.create(&key, echo())
        .await
        .assert_error(401, "invalid_api_key");
    let out = s.cli_raw(&["keys", "enable", &id]);
    assert!(!out.status.success(), "a deleted key cannot be re-enabled");

    // An expiry already past is refused, on a new key and on an update: no key is made, and
    // the updated key works as before.
    let fresh = s.key("states@example.com", &[]);
    let keys_before = s.cli(&["keys", "list", "--account", "states@example.com"]);
    let past = "2020-01-01T00:00:00Z";
    let out = s.cli_raw(&[
        "keys",
        "create",
        "--account",
        "states@example.com",
        "--expires-at",
        past,
    ]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--expires-at") && stderr.contains("not in the future"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "a key was printed");
    assert_eq!(
        s.cli(&["keys", "list", "--account", "states@example.com"]),
        keys_before
    );
    let out = s.cli_raw(&["keys", "update", &fresh, "--expires-at", past]);
    assert!(!out.status.success());
    assert_eq!(c.create(&fresh, echo()).await.status, 201);
    // Expiring while in use.
    let soon = (time_in(Duration::from_secs(2))).to_string();
    let short = s.key("states@example.com", &["--expires-at", &soon]);
    assert_eq!(c.create(&short, echo()).await.status, 201);
    tokio::time::sleep(Duration::from_millis(2200)).await;
    c.create(&short, echo())
        .await
        .assert_error(401, "invalid_api_key");
    // An expiry can be lifted.
    s.cli(&["keys", "update", &short, "--no-expiry"]);
    assert_eq!(c.create(&short, echo()).await.status, 201);
}

/// RFC 3339 for now + `d`, computed without a date library: the server parses it.
fn time_in(d: Duration) -> String {
    let t = std::time::SystemTime::now() + d;
    let secs = t.duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[tokio::test]
async fn ip_allowlist() {
    let s = Server::start();
    s.account("ips@example.com", 100);
    let c = s.client();
    let key = s.key(
        "ips@example.com",
        &["--allow-ip", "10.1.2.3", "--allow-ip", "2001:db8::/32"],
    );
    let r = c.create(&key, echo()).await;
    r.assert_error(403, "ip_not_allowed");
    c.get(Some(&key), "/api/v1/runs/run_x")
        .await
        .assert_error(403, "ip_not_allowed");

    // A spoofed X-Forwarded-For from an untrusted peer is ignored.
    let spoofed = c
        .send(
            c.http
                .post(format!("{}/api/v1/runs", c.base))
                .bearer_auth(&key)
                .header("x-forwarded-for", "10.1.2.3")
                .body(echo().to_string()),
        )
        .await;
    spoofed.assert_error(403, "ip_not_allowed");

    // With 127.0.0.1 listed, then with a CIDR block containing it.
    s.cli(&[
        "keys",
        "update",
        &key,
        "--allow-ip",
        "10.1.2.3",
        "--allow-ip",
        "127.0.0.1",
    ]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    s.cli(&["keys", "update", &key, "--allow-ip", "127.0.0.0/8"]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    s.cli(&["keys", "update", &key, "--allow-ip", "192.168.0.0/16"]);
    c.create(&key, echo())
        .await
        .assert_error(403, "ip_not_allowed");
    s.cli(&["keys", "update", &key, "--clear-allow-ips"]);
    assert_eq!(c.create(&key, echo()).await.status, 201);

    // More than ten entries, or garbage, is refused by the CLI.
    let mut args = vec!["keys", "update", &key];
    let ips: Vec<String> = (0..11).map(|i| format!("10.0.0.{i}")).collect();
    for ip in &ips {
        args.extend(["--allow-ip", ip.as_str()]);
    }
    assert!(!s.cli_raw(&args).status.success());
    assert!(
        !s.cli_raw(&["keys", "update", &key, "--allow-ip", "not-an-ip"])
            .status
            .success()
    );
}

#[tokio::test]
async fn forwarded_for_is_honoured_only_from_trusted_proxies() {
    let s = Server::start_with(&[
        ("RUNBASE_TRUSTED_PROXIES", "[\"127.0.0.1\"]"),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "100000"),
    ]);
    s.account("proxy@example.com", 100);
    let c = s.client();
    let key = s.key("proxy@example.com", &["--allow-ip", "203.0.113.7"]);
    let via = |xff: &'static str| {
        let (c, key) = (c.clone(), key.clone());
        async move {
            c.send(
                c.http
                    .post(format!("{}/api/v1/runs", c.base))
                    .bearer_auth(&key)
                    .header("x-forwarded-for", xff)
                    .body(echo().to_string()),
            )
            .await
        }
    };
    assert_eq!(via("203.0.113.7").await.status, 201);
    // The client cannot prepend its own entry: the proxy appends the real address last.
    via("203.0.113.7, 198.51.100.1")
        .await
        .assert_error(403, "ip_not_allowed");
    c.create(&key, echo())
        .await
        .assert_error(403, "ip_not_allowed");
}

#[tokio::test]
async fn spend_limit_is_never_exceeded_and_refunds_give_it_back() {
    let s = Server::start();
    s.account("spend@example.com", 100);
    let c = s.client();
    let key = s.key("spend@example.com", &["--spend-limit-cents", "3"]);
    let img = json!({"model": "runbase/placeholder-image", "input": {"prompt": "x"}});
    assert_eq!(c.create(&key, img.clone()).await.status, 201); // spent 2
    // 2 + 2 would pass 3: refused even though 1 cent of the limit is left.
    c.create(&key, img.clone())
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    assert_eq!(c.create(&key, echo()).await.status, 201); // spent 3
    c.create(&key, echo())
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    // invalid_input is reported before the spend limit.
    c.create(&key, json!({"model": "runbase/echo", "input": {}}))
        .await
        .assert_error(400, "invalid_input");

    // Raising the limit takes effect on the next request.
    s.cli(&["keys", "update", &key, "--spend-limit-cents", "4"]);
    // It fails only after a second, so that it is certainly not refunded yet when the next
    // create is refused (an idle worker starts a run as soon as its create commits).
    let failing = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "x", "fail": "no", "delay_ms": 1000}}),
        )
        .await;
    assert_eq!(failing.status, 201); // spent 4
    c.create(&key, echo())
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    // The failed run's refund gives the spend back.
    c.wait(&key, failing.body["id"].as_str().unwrap()).await;
    assert_eq!(c.create(&key, echo()).await.status, 201);
    let acct = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(acct.body["key"]["spentUsd"], 40_000);
    assert_eq!(acct.body["key"]["spendLimitUsd"], 40_000);
    // The spend limit comes before the balance: a poor account with a spent key says 403.
    s.cli(&["accounts", "create", "broke@example.com"]);
    let broke = s.key("broke@example.com", &["--spend-limit-cents", "0"]);
    c.create(&broke, echo())
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    s.cli(&["keys", "update", &broke, "--no-spend-limit"]);
    c.create(&broke, echo())
        .await
        .assert_error(402, "insufficient_balance");
}

#[tokio::test]
async fn usage_quota() {
    let s = Server::start();
    s.account("quota@example.com", 100);
    let c = s.client();
    let key = s.key("quota@example.com", &["--quota", "2"]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    c.create(&key, echo())
        .await
        .assert_error(429, "USAGE_EXCEEDED");
    // USAGE_EXCEEDED comes before body checks.
    c.post_raw(Some(&key), "/api/v1/runs", "{bad json")
        .await
        .assert_error(429, "USAGE_EXCEEDED");
    // Reading runs still works.
    assert_eq!(c.get(Some(&key), "/api/v1/runs").await.status, 200);
    s.cli(&["keys", "update", &key, "--quota", "3"]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    c.create(&key, echo())
        .await
        .assert_error(429, "USAGE_EXCEEDED");
}

/// A key's copy on the node, probed: [`CopyProbe::primed`] reads the key (which copies it whole)
/// and then changes it with the CLI (`KEY` in `change` is the key); [`CopyProbe::took`] checks
/// that the create made next was made on the copy (`runbase_create_key_checks_total`), unless
/// the step took longer than the copy lives, which it reports.
struct CopyProbe<'a> {
    s: &'a Server,
    c: &'a common::Client,
    key: &'a str,
    metrics: String,
}

impl CopyProbe<'_> {
    async fn remembered(&self) -> f64 {
        common::sample(
            &common::scrape(&self.metrics).await,
            r#"runbase_create_key_checks_total{key="remembered"}"#,
        )
        .unwrap_or(0.0)
    }

    async fn primed(&self, change: &[&str]) -> (f64, std::time::Instant) {
        let before = self.remembered().await;
        let at = std::time::Instant::now();
        assert_eq!(self.c.get(Some(self.key), "/api/v1/runs").await.status, 200);
        let args: Vec<&str> = change
            .iter()
            .map(|a| if *a == "KEY" { self.key } else { a })
            .collect();
        self.s.cli(&args);
        (before, at)
    }

    async fn took(&self, (before, at): (f64, std::time::Instant)) {
        let elapsed = at.elapsed();
        if elapsed < std::time::Duration::from_millis(800) {
            assert_eq!(self.remembered().await, before + 1.0, "made on the copy");
        } else {
            eprintln!("the step took {elapsed:?}: the copy may have run out, not checked");
        }
    }
}

/// A create may be authenticated from the copy of its key this node read within the last second,
/// without reading the key's row (`KeySeen::Remembered`). Its store transaction checks the key on
/// the row it locks, and any answer the copy could have got wrong is given from the key's row.
/// Each change below comes right after a read of the key (a GET, which copies it), and is followed
/// by a create that the copy alone would have let through or refused wrongly. The metrics count
/// the creates made on a copy, so each step also checks that it took that path (unless the
/// machine took longer than the copy lives, which it reports).
#[tokio::test]
async fn a_create_on_a_remembered_key_is_answered_from_the_key_row() {
    let at = common::free_address();
    let s = Server::start_with(&[("RUNBASE_METRICS_LISTEN", at.as_str())]);
    let metrics = format!("http://{at}/metrics");
    s.account("remembered@example.com", 100);
    let c = s.client();
    let key = s.key("remembered@example.com", &["--quota", "1"]);
    let probe = CopyProbe {
        s: &s,
        c: &c,
        key: &key,
        metrics,
    };
    let primed = |change| probe.primed(change);
    let took = |step| probe.took(step);
    // After `primed`: one create admitted on the copy, and the next refused with `code`.
    let admits_one = |step, status: u16, code: &'static str| {
        let (c, key, took) = (&c, &key, &took);
        async move {
            assert_eq!(c.create(key, echo()).await.status, 201);
            took(step).await;
            c.create(key, echo()).await.assert_error(status, code);
        }
    };

    // An allowlist added since: the store refuses, and the answer is the row's.
    let step = primed(&["keys", "update", "KEY", "--allow-ip", "10.1.2.3"]).await;
    c.create(&key, echo())
        .await
        .assert_error(403, "ip_not_allowed");
    took(step).await;
    s.cli(&["keys", "update", &key, "--clear-allow-ips"]);

    // Disabled since: a create whose body is bad, and then a good one, are answered 401.
    let step = primed(&["keys", "disable", "KEY"]).await;
    c.post_raw(Some(&key), "/api/v1/runs", "{bad json")
        .await
        .assert_error(401, "invalid_api_key");
    took(step).await;
    s.cli(&["keys", "enable", &key]);
    let step = primed(&["keys", "disable", "KEY"]).await;
    c.create(&key, echo())
        .await
        .assert_error(401, "invalid_api_key");
    took(step).await;

    // Quota 1: the copy was read before the run that used it up; the store refuses the next.
    s.cli(&["keys", "enable", &key]);
    let step = primed(&["keys", "update", "KEY", "--name", "renamed"]).await;
    admits_one(step, 429, "USAGE_EXCEEDED").await;

    // A copy read once the quota was used up, then the quota raised: the copy refuses, the row
    // admits.
    let step = primed(&["keys", "update", "KEY", "--quota", "2"]).await;
    admits_one(step, 429, "USAGE_EXCEEDED").await;

    // A spend limit met (the store refuses: its answer stands, and the copy is dropped), copied
    // afresh, then raised: the copy refuses, the row admits.
    s.cli(&[
        "keys",
        "update",
        &key,
        "--no-quota",
        "--spend-limit-cents",
        "3",
    ]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    c.create(&key, echo())
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    let step = primed(&["keys", "update", "KEY", "--spend-limit-cents", "4"]).await;
    admits_one(step, 403, "api_key_spend_limit_exceeded").await;

    // Four runs, each charged once; nothing for the refused creates.
    assert_eq!(s.count("SELECT count(*) FROM runs"), 4);
    assert_eq!(
        s.count("SELECT count(*) FROM ledger WHERE kind = 'run_charge'"),
        4
    );
}

/// A create with an `Idempotency-Key` may also be made on the remembered copy of its key; then
/// only the run created is answered on the copy's word. A replay, a refusal or a conflict is
/// answered after the key's row is read, and nothing the copy got wrong is kept under the
/// idempotency key. Each change comes right after a read of the key (which copies it), as in
/// the test above.
#[tokio::test]
async fn a_keyed_create_on_a_remembered_key_is_answered_from_the_key_row() {
    let at = common::free_address();
    let s = Server::start_with(&[("RUNBASE_METRICS_LISTEN", at.as_str())]);
    let metrics = format!("http://{at}/metrics");
    s.account("keyed@example.com", 100);
    let c = s.client();
    let key = s.key("keyed@example.com", &[]);
    let keyed = |idem: &'static str| {
        let (c, key) = (&c, &key);
        async move {
            let req = c
                .http
                .post(format!("{}/api/v1/runs", c.base))
                .bearer_auth(key)
                .header("idempotency-key", idem)
                .header("content-type", "application/json")
                .body(echo().to_string());
            c.send(req).await
        }
    };
    let probe = CopyProbe {
        s: &s,
        c: &c,
        key: &key,
        metrics,
    };
    let primed = |change| probe.primed(change);
    let took = |step| probe.took(step);

    // A fresh key on a copy: created, and replayed as the first answer.
    let step = primed(&["accounts", "list"]).await;
    let first = keyed("k1").await;
    assert_eq!(first.status, 201, "{}", first.body);
    took(step).await;
    let again = keyed("k1").await;
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.body, first.body);

    // Disabled since the copy: a replay is the row's 401, not the recorded run.
    let step = primed(&["keys", "disable", "KEY"]).await;
    keyed("k1").await.assert_error(401, "invalid_api_key");
    took(step).await;
    s.cli(&["keys", "enable", &key]);
    // A malformed `Idempotency-Key` on a just-disabled key is the row's 401 too, not the 400
    // (no create is counted: the header is refused first).
    primed(&["keys", "disable", "KEY"]).await;
    let req = c
        .http
        .post(format!("{}/api/v1/runs", c.base))
        .bearer_auth(&key)
        .header("idempotency-key", "")
        .header("content-type", "application/json")
        .body(echo().to_string());
    c.send(req).await.assert_error(401, "invalid_api_key");
    // A fresh key is refused too, and its 401 is not kept: enabled, the key creates under it.
    s.cli(&["keys", "enable", &key]);
    let step = primed(&["keys", "disable", "KEY"]).await;
    keyed("k2").await.assert_error(401, "invalid_api_key");
    took(step).await;
    s.cli(&["keys", "enable", &key]);
    let created = keyed("k2").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("idempotent-replayed"), None);

    // An allowlist added since: 403 from the row, not kept; cleared, the key creates under it.
    let step = primed(&["keys", "update", "KEY", "--allow-ip", "10.1.2.3"]).await;
    keyed("k3").await.assert_error(403, "ip_not_allowed");
    took(step).await;
    s.cli(&["keys", "update", &key, "--clear-allow-ips"]);
    let created = keyed("k3").await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.header("idempotent-replayed"), None);

    // A spend limit met since the copy: the store's refusal (made on the row) is kept, and
    // replayed.
    let step = primed(&["keys", "update", "KEY", "--spend-limit-cents", "1"]).await;
    keyed("k4")
        .await
        .assert_error(403, "api_key_spend_limit_exceeded");
    took(step).await;
    s.cli(&["keys", "update", &key, "--no-spend-limit"]);
    let kept = keyed("k4").await;
    kept.assert_error(403, "api_key_spend_limit_exceeded");
    assert_eq!(kept.header("idempotent-replayed"), Some("true"));

    // Three runs, each charged once.
    assert_eq!(s.count("SELECT count(*) FROM runs"), 3);
    assert_eq!(
        s.count("SELECT count(*) FROM ledger WHERE kind = 'run_charge'"),
        3
    );
}

/// A key read with a run (GET of a run by id) may be read partially (on PostgreSQL: no test
/// flag, no quota). Such a copy never authenticates a create: a test key's create right after it
/// is a test run, free, never a charged one.
#[tokio::test]
async fn a_partial_copy_of_a_key_never_makes_a_create() {
    let at = common::free_address();
    let s = Server::start_with(&[("RUNBASE_METRICS_LISTEN", at.as_str())]);
    let metrics = format!("http://{at}/metrics");
    let checks = || async {
        let text = common::scrape(&metrics).await;
        let n = |seen: &str| {
            common::sample(
                &text,
                &format!("runbase_create_key_checks_total{{key=\"{seen}\"}}"),
            )
            .unwrap_or(0.0)
        };
        (n("read"), n("remembered"))
    };
    s.account("partial@example.com", 100);
    let c = s.client();
    let live = s.key("partial@example.com", &[]);
    let created = c.create(&live, echo()).await;
    assert_eq!(created.status, 201);
    let id = created.body["id"].as_str().unwrap().to_owned();
    let test = s.key("partial@example.com", &["--test"]);
    let read = c.run(&test, &id).await.status;
    assert!(read == 200 || read == 404, "{read}");
    let (reads, remembered) = checks().await;
    let run = c.create(&test, echo()).await;
    assert_eq!(run.status, 201, "{}", run.body);
    // Authenticated by reading the key, not from the copy the GET left.
    assert_eq!(checks().await, (reads + 1.0, remembered));
    let test_id = run.body["id"].as_str().unwrap();
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) FROM runs WHERE id = '{test_id}' AND test"
        )),
        1
    );
    assert_eq!(
        s.count(&format!(
            "SELECT count(*) FROM ledger WHERE run_id = '{test_id}'"
        )),
        0
    );
}

#[tokio::test]
async fn rate_limit_counts_creates_and_gets_together() {
    let s = Server::start_with(&[]);
    let key = s.account("rate@example.com", 100);
    let other = s.key("rate@example.com", &["--name", "other"]);
    let c = s.client();
    let first = c.create(&key, echo()).await;
    assert_eq!(first.status, 201);
    assert_eq!(first.header("ratelimit-limit"), Some("20"));
    assert_eq!(first.header("ratelimit-remaining"), Some("19"));
    let id = first.body["id"].as_str().unwrap().to_owned();
    for i in 2..=20 {
        let r = if i % 2 == 0 {
            c.run(&key, &id).await
        } else {
            c.create(&key, echo()).await
        };
        assert!(
            r.status == 200 || r.status == 201,
            "request {i}: {}",
            r.body
        );
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some((20 - i).to_string().as_str()),
            "request {i}"
        );
        let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!((1..=10).contains(&reset));
    }
    let r = c.run(&key, &id).await;
    r.assert_error(429, "RATE_LIMITED");
    assert_eq!(r.body["error"]["message"], "Rate limit exceeded");
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=10).contains(&retry), "{retry}");
    c.create(&key, echo())
        .await
        .assert_error(429, "RATE_LIMITED");
    // Errors after the rate-limit step still count and carry the headers...
    // ...and the limit is per key: another key of the same account is unaffected.
    assert_eq!(c.create(&other, echo()).await.status, 201);
    // Listing and the account endpoint are not counted.
    assert_eq!(c.get(Some(&key), "/api/v1/runs").await.status, 200);
    let acct = c.get(Some(&key), "/api/v1/account").await;
    assert_eq!(acct.body["key"]["rateLimit"]["remaining"], 0);
    // Invalid keys are refused before the limiter (they are 401, not 429).
    c.create("sk-unknown", echo())
        .await
        .assert_error(401, "invalid_api_key");
}

#[tokio::test]
async fn rate_limit_comes_before_usage_quota_and_after_ip() {
    let s = Server::start_with(&[("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "2")]);
    s.account("order@example.com", 100);
    let c = s.client();
    let key = s.key("order@example.com", &["--quota", "1"]);
    assert_eq!(c.create(&key, echo()).await.status, 201);
    c.create(&key, echo())
        .await
        .assert_error(429, "USAGE_EXCEEDED");
    c.create(&key, echo())
        .await
        .assert_error(429, "RATE_LIMITED");
    let walled = s.key("order@example.com", &["--allow-ip", "10.0.0.1"]);
    for _ in 0..3 {
        c.create(&walled, echo())
            .await
            .assert_error(403, "ip_not_allowed");
    }
}

#[tokio::test]
async fn last_used_is_recorded_for_any_authenticated_request() {
    let s = Server::start();
    let key = s.account("used@example.com", 0);
    assert!(
        s.cli(&["keys", "list", "--account", "used@example.com"])
            .contains("last used never")
    );
    let c = s.client();
    assert_eq!(c.get(Some(&key), "/api/v1/runs").await.status, 200);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while s
        .cli(&["keys", "list", "--account", "used@example.com"])
        .contains("last used never")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "last use never recorded"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

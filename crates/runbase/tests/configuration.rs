//! Configuration layers and catalogue files, through the real binary.

#![allow(clippy::unwrap_used, reason = "tests may unwrap")]

mod common;
use common::{BIN, Server};
use serde_json::json;
use std::process::Command;

const EXTRA_CATALOG: &str = r#"
[[model]]
id = "acme/cheap-echo"
name = "Cheap Echo"
description = "The echo model at a quarter of a cent."
category = "text to text"
provider = "builtin"
upstream = "echo"
price = { cents = 0.25 }
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }
output_schema = { type = "object" }

[[model]]
id = "runbase/echo"
name = "Echo (repriced)"
category = "text to text"
provider = "builtin"
upstream = "echo"
price = { cents = 3 }
input_schema = { type = "object", required = ["text"], properties = { text = { type = "string" } } }
output_schema = { type = "object" }

[[model]]
id = "nowhere/typo"
name = "A provider name with a typo"
category = "text to image"
provider = "replcate"
price = { cents = 1 }
input_schema = { type = "object" }
output_schema = { type = "object" }

[[model]]
id = "nowhere/unconfigured"
name = "Needs a provider this install does not have"
category = "text to image"
provider = "replicate"
price = { cents = 1 }
input_schema = { type = "object" }
output_schema = { type = "object" }
"#;

#[tokio::test]
async fn a_catalogue_file_adds_and_replaces_models() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("extra.toml");
    std::fs::write(&file, EXTRA_CATALOG).unwrap();
    let list = format!("[\"{}\"]", file.display());
    let s = Server::start_with(&[
        ("RUNBASE_CATALOG", list.as_str()),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000"),
    ]);
    let key = s.account("cat@example.com", 10);
    let c = s.client();

    let models = c.get(None, "/api/v1/models").await;
    let ids: Vec<&str> = models.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"acme/cheap-echo"), "{ids:?}");
    let availability = |id: &str| {
        models.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["available"].clone())
    };
    assert_eq!(
        availability("nowhere/unconfigured"),
        Some(json!(false)),
        "a model without a configured provider is listed as unavailable"
    );
    assert_eq!(availability("acme/cheap-echo"), Some(json!(true)));
    assert_eq!(availability("nowhere/typo"), Some(json!(false)));
    assert!(
        s.log().contains("no provider is named \"replcate\""),
        "a misspelt provider is reported at start-up"
    );
    assert!(
        !s.log().contains("no provider is named \"replicate\""),
        "a known provider without credentials is not a mistake"
    );
    c.create(&key, json!({"model": "nowhere/unconfigured", "input": {}}))
        .await
        .assert_error(400, "model_not_found");

    // A fraction of a cent is charged exactly, and shown as a decimal.
    let r = c
        .create(
            &key,
            json!({"model": "acme/cheap-echo", "input": {"text": "a"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(r.body["costUsd"], 2_500);
    assert_eq!(c.balance(&key).await, 9.75);
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["output"]["text"], "a");
    // The replaced model has the new price.
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "b"}}),
        )
        .await;
    assert_eq!(r.body["costUsd"], 30_000);
    assert_eq!(c.balance(&key).await, 6.75);
}

fn serve_fails(env: &[(&str, &str)], args: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve should refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn bad_oidc_providers_are_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("runbase.toml");
    let refused = |toml: &str, env: &[(&str, &str)], expected: &str| {
        std::fs::write(&conf, toml).unwrap();
        let err = serve_fails(env, &["--config", conf.to_str().unwrap()]);
        assert!(err.contains(expected), "{toml}: {err}");
    };
    // Only google has a preset issuer.
    refused(
        "[auth.oidc.acme]\nclient_id = \"a\"\nclient_secret = \"b\"\n",
        &[],
        "auth.oidc.acme: issuer is required",
    );
    // Plain HTTP only on a loopback address.
    refused(
        "[auth.oidc.acme]\nissuer = \"http://idp.example.com\"\nclient_id = \"a\"\nclient_secret = \"b\"\n",
        &[],
        "must be https://",
    );
    // The secret is required, and its variable is named.
    refused(
        "[auth.oidc.google]\nclient_id = \"a\"\n",
        &[],
        "RUNBASE_AUTH__OIDC__GOOGLE__CLIENT_SECRET",
    );
    refused(
        "[auth.oidc.google]\nclient_id = \"a\"\nclient_secret = \"b\"\nscope = [\"x\"]\n",
        &[],
        "scope",
    );
    // The environment fills in (or overrides) the file.
    std::fs::write(&conf, "[auth.oidc.google]\nclient_id = \"a\"\n").unwrap();
    let s = Server::start_with(&[
        ("RUNBASE_CONFIG", conf.to_str().unwrap()),
        ("RUNBASE_AUTH__OIDC__GOOGLE__CLIENT_SECRET", "from-env"),
    ]);
    let page = reqwest::get(format!("{}/login", s.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with Google"), "{page}");
}

#[test]
fn bad_configuration_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[[model]]\nid = \"broken\"\n").unwrap();
    let err = serve_fails(&[], &["--catalog", bad.to_str().unwrap()]);
    assert!(err.contains("bad.toml"), "{err}");

    let conf = dir.path().join("runbase.toml");
    std::fs::write(&conf, "listen = \"127.0.0.1:0\"\nno_such_setting = 1\n").unwrap();
    let err = serve_fails(&[], &["--config", conf.to_str().unwrap()]);
    assert!(err.contains("no_such_setting"), "{err}");

    let err = serve_fails(
        &[("RUNBASE_DATABASE_URL", "postgres://localhost/runbase")],
        &[],
    );
    assert!(err.contains("PostgreSQL"), "{err}");
    // The connection limits: unknown keys and impossible values are refused.
    std::fs::write(&conf, "[http]\nmax_conections = 10\n").unwrap();
    let err = serve_fails(&[], &["--config", conf.to_str().unwrap()]);
    assert!(err.contains("max_conections"), "{err}");
    let err = serve_fails(&[("RUNBASE_HTTP__HEADER_TIMEOUT_SECS", "0")], &[]);
    assert!(err.contains("http"), "{err}");
    let err = serve_fails(&[("RUNBASE_HTTP__WRITE_TIMEOUT_SECS", "0")], &[]);
    assert!(err.contains("http"), "{err}");
    let err = serve_fails(
        &[
            ("RUNBASE_HTTP__MAX_CONNECTIONS", "10"),
            ("RUNBASE_HTTP__MAX_CONNECTIONS_PER_IP", "20"),
        ],
        &[],
    );
    assert!(err.contains("max_connections_per_ip"), "{err}");

    let err = serve_fails(&[("RUNBASE_DURABILITY", "sometimes")], &[]);
    assert!(err.contains("durability"), "{err}");
    for size in ["0", "5000"] {
        let err = serve_fails(&[("RUNBASE_DATABASE__POOL_SIZE", size)], &[]);
        assert!(err.contains("database.pool_size"), "{err}");
    }
    // Worker settings that would busy-loop, never run, or keep a dead worker's run forever.
    for (var, value) in [
        ("RUNBASE_WORKER__LEASE_MS", "0"),
        ("RUNBASE_WORKER__LEASE_MS", "18446744073709551615"),
        ("RUNBASE_WORKER__MAX_ATTEMPTS", "0"),
        ("RUNBASE_WORKER__CONCURRENCY", "0"),
        ("RUNBASE_WORKER__POLL_INTERVAL_MS", "0"),
        // Fewer places than calls (the default concurrency is 64), or past the bound.
        ("RUNBASE_WORKER__INTAKE", "10"),
        ("RUNBASE_WORKER__INTAKE", "100000"),
    ] {
        let err = serve_fails(&[(var, value)], &[]);
        let name = var.trim_start_matches("RUNBASE_WORKER__").to_lowercase();
        assert!(
            err.contains(&format!("worker.{name}")),
            "{var}={value}: {err}"
        );
    }
    std::fs::write(&conf, "[database]\npool_size = -1\n").unwrap();
    let err = serve_fails(&[], &["--config", conf.to_str().unwrap()]);
    assert!(err.contains("pool_size"), "{err}");
    // Uploads: a retention past any timestamp (0 is "forever"), a negative quota.
    let err = serve_fails(&[("RUNBASE_UPLOADS__RETENTION_DAYS", "40000")], &[]);
    assert!(err.contains("uploads.retention_days"), "{err}");
    std::fs::write(&conf, "[uploads]\nquota_bytes_per_account = -1\n").unwrap();
    let err = serve_fails(&[], &["--config", conf.to_str().unwrap()]);
    assert!(err.contains("quota_bytes_per_account"), "{err}");
}

/// `[database] pool_size` bounds the connections a node holds to PostgreSQL, and a small pool
/// still serves many concurrent requests (they wait for a connection).
#[tokio::test]
async fn the_postgres_pool_size_bounds_the_connections() {
    let Some(db) = runbase_store_postgres::testing::TestDatabase::create() else {
        return;
    };
    let url = db.url.as_str();
    let out = Command::new(BIN)
        .arg("migrate")
        .env("RUNBASE_DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut env = common::relaxed();
    env.push(("RUNBASE_DATABASE_URL", url));
    env.push(("RUNBASE_DATABASE__POOL_SIZE", "2"));
    let s = Server::start_with(&env);
    let key = s.account("pool@example.com", 1000);
    let c = s.client();
    let creates: Vec<_> = (0..32)
        .map(|i| {
            let (c, key) = (c.clone(), key.clone());
            tokio::spawn(async move {
                c.create(
                    &key,
                    json!({"model": "runbase/echo", "input": {"text": format!("run {i}")}}),
                )
                .await
            })
        })
        .collect();
    for created in creates {
        let r = created.await.unwrap();
        assert_eq!(r.status, 201, "{}", r.body);
    }
    // The pool's two connections and the one listening for NOTIFY. The admin commands above ran
    // in processes of their own, whose connections may take a moment to be gone.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let n = db.connections();
        if n <= 3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{n} connections with pool_size = 2"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    drop(s);
}

#[tokio::test]
async fn a_config_file_and_sqlite_url_are_honoured_and_unknown_variables_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("elsewhere.db");
    let conf = dir.path().join("runbase.toml");
    std::fs::write(
        &conf,
        "[rate_limits.runs]\nrequests = 3\nwindow_secs = 60\n",
    )
    .unwrap();
    let url = format!("sqlite://{}", db.display());
    let s = Server::start_with(&[
        ("RUNBASE_CONFIG", conf.to_str().unwrap()),
        ("RUNBASE_DATABASE_URL", url.as_str()),
        ("RUNBASE_NOT_A_SETTING", "1"),
    ]);
    // The CLI must be pointed at the same database.
    let out = Command::new(BIN)
        .args([
            "accounts",
            "create",
            "conf@example.com",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(db.exists());
    let out = Command::new(BIN)
        .args([
            "keys",
            "create",
            "--account",
            "conf@example.com",
            "--database-url",
            &url,
        ])
        .output()
        .unwrap();
    let key = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let c = s.client();
    let r = c.get(Some(&key), "/api/v1/runs/run_x").await;
    assert_eq!(r.header("ratelimit-limit"), Some("3"));
    let log = std::fs::read_to_string(s.dir.join("server.log")).unwrap();
    assert!(log.contains("RUNBASE_NOT_A_SETTING"), "{log}");
}

/// PostgreSQL is migrated explicitly: `serve` and the admin commands refuse an unmigrated
/// database and name the fix; `runbase migrate` or `serve --migrate` apply the migrations.
#[tokio::test]
async fn postgres_is_migrated_explicitly() {
    let Some(db) = runbase_store_postgres::testing::TestDatabase::create() else {
        return;
    };
    let url = db.url.as_str();
    let err = serve_fails(&[("RUNBASE_DATABASE_URL", url)], &[]);
    assert!(err.contains("runbase migrate"), "{err}");
    let out = Command::new(BIN)
        .args(["accounts", "create", "pg@example.com"])
        .env("RUNBASE_DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("runbase migrate"),
        "{out:?}"
    );

    let out = Command::new(BIN)
        .arg("migrate")
        .env("RUNBASE_DATABASE_URL", url)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // The latest version is the number of the store's migration files.
    let latest = std::fs::read_dir(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../store-postgres/migrations"
    ))
    .unwrap()
    .filter(|e| {
        e.as_ref()
            .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "sql"))
    })
    .count();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("version {latest} ")),
        "{out:?}"
    );

    let s = Server::start_with(&[
        ("RUNBASE_DATABASE_URL", url),
        ("RUNBASE_RATE_LIMITS__RUNS__REQUESTS", "1000"),
    ]);
    let key = s.account("pg@example.com", 10);
    let c = s.client();
    let r = c
        .create(
            &key,
            json!({"model": "runbase/echo", "input": {"text": "on postgres"}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let done = c.wait(&key, r.body["id"].as_str().unwrap()).await;
    assert_eq!(done["output"]["text"], "on postgres");
    assert_eq!(c.balance(&key).await, json!(9));
    drop(s);

    // `serve --migrate` on an empty database starts.
    let Some(empty) = runbase_store_postgres::testing::TestDatabase::create() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args([
            "serve",
            "--migrate",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(dir.path())
        .env("RUNBASE_DATABASE_URL", &empty.url)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let _ = child.kill();
    let _ = child.wait();
    assert!(line.starts_with("Runbase listening on"), "{line:?}");
}
